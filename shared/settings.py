"""All settings, from environment variables with the ZORGPOT_ prefix. The one place for configuration.

The embedded default (make up) and the compose deployment are driven by the same variables.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZORGPOT_", extra="ignore")

    data_dir: Path = Path("./var")
    broker_port: int = 9092
    # Bootstrap servers; empty means the embedded broker on 127.0.0.1:broker_port.
    kafka_bootstrap: str = ""
    # "embedded" tunes timeouts for Tansu (design.md section 7); "kafka" keeps the library defaults.
    broker_profile: str = "embedded"

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # Internal HTTP views of the stream services; 0 means gateway_port + 1 / + 2 / + 3.
    hours_port: int = 0
    budget_port: int = 0
    settlement_port: int = 0
    # Where the gateway finds the services' views; empty means http://127.0.0.1:<port>.
    hours_url: str = ""
    budget_url: str = ""
    settlement_url: str = ""

    coordinator_token: str = ""
    # SQLAlchemy async URL per service; empty means a SQLite file in data_dir.
    gateway_db: str = ""
    hours_db: str = ""
    budget_db: str = ""
    settlement_db: str = ""

    demo: bool = True
    region_name: str = "Regio Noord-Limburg (demo)"

    # Gateway limits.
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_items: int = 10_000
    # Refuse new writes (503) when the outbox holds more unsent events than this.
    max_outbox_backlog: int = 500_000
    # The broker counts as unavailable when no contact succeeded for this long.
    broker_unavailable_after_s: float = 10.0

    # Statement webhooks (gateway): retry delay doubles from base to max until the receiver answers 2xx.
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_timeout_s: float = 10.0
    # A delivery still failing this long after its first failed attempt is given up: status `failed`, the
    # metric zorgpot_webhook_give_ups_total and alert ZorgpotWebhookGivenUp; the coordinator retries it with
    # POST /webhooks/deliveries/{id}/retry. Fractions are allowed (tests set 0.001).
    webhook_give_up_hours: float = Field(default=72.0, gt=0)

    # Stream services apply what they consume in batches (one transaction each): a batch is what one fetch
    # returned, at most batch_max records. Bigger batches make fewer, larger transactions under load.
    batch_max: int = 1000
    # Longest a consumer's Fetch may wait for records; 0: the broker profile's default (shared.kafka).
    fetch_wait_ms: int = 0
    # Fault tests only: the stream kernel holds each batch's transaction open this long before committing, so
    # a kill timed by progress lands inside it (tests/integration/test_kernel_faults.py). Keep 0.
    kernel_commit_delay_ms: int = 0

    log_level: str = "INFO"
    worker_instance: str = Field(default="0")

    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    def port_of(self, service: str) -> int:
        offsets = {"gateway": 0, "hours": 1, "budget": 2, "settlement": 3}
        explicit = getattr(self, f"{service}_port") if service != "gateway" else self.gateway_port
        return explicit or self.gateway_port + offsets[service]

    def url_of(self, service: str) -> str:
        explicit = getattr(self, f"{service}_url", "")
        return explicit or f"http://127.0.0.1:{self.port_of(service)}"

    def db_url(self, service: str) -> str:
        explicit = getattr(self, f"{service}_db")
        if explicit:
            return explicit
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.broker_profile == "embedded"


def configure_logging(service: str, settings: Settings) -> None:
    import logging

    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s", force=True)
    # The Kafka clients log every connection at INFO; only their warnings help an operator.
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
