"""The compose deployment's files, checked without a Docker engine: docker-compose.yml resolves, images are
pinned, Prometheus' config and alert rules pass promtool (including the rules' unit tests), the PostgreSQL
init script gives each service its own database and user, and every metric the Grafana dashboard and the
alert rules name is one the services really export (a live /metrics scrape of a running stack).

The tools come from ops/system-deps.sh (make test runs it); a missing tool fails these tests, never skips.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.stack import ROOT, Stack, free_port
from tests.integration.client import Api, Region

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "zorgpot-municipality.json"
INIT_DB = ROOT / "deploy" / "postgres" / "init-databases.sh"
STREAM_SERVICES = {"hours": 8001, "budget": 8002, "settlement": 8003}
# PromQL words that look like metric names but are not (functions, keywords, label names).
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "by", "without", "abs", "rate", "increase", "deriv", "delta",
                "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "absent", "label_replace",
                "label_values", "topk", "bottomk", "offset", "bool", "time", "vector", "scalar", "clamp_min"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `bash ops/system-deps.sh` as root (make test does)"
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def resolved_compose() -> dict[str, Any]:
    """docker-compose's own view of the file (anchors merged, .env.example interpolated), as a dict."""
    text = run([tool("docker-compose"), "--env-file", ".env.example", "-f", str(COMPOSE), "config"]).stdout
    # docker-compose is a Debian Python program with PyYAML beside it; the project's venv has no YAML parser.
    to_json = subprocess.run(["/usr/bin/python3", "-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                             input=text, capture_output=True, text=True, check=True)
    return json.loads(to_json.stdout)


# -- docker-compose.yml -------------------------------------------------------------------------------------
def test_compose_file_resolves_and_pins_every_image() -> None:
    run([tool("docker-compose"), "--env-file", ".env.example", "-f", str(COMPOSE), "config", "-q"])
    services = resolved_compose()["services"]
    assert {"kafka", "topics", "postgres", "gateway", "hours", "budget", "settlement", "prometheus",
            "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert service["build"]["dockerfile"] == "Dockerfile", name  # one Dockerfile for all services
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"v?\d+(\.\d+)+(-[a-z0-9.]+)?", tag), f"{name}: image {image} is not pinned"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["topics"]["command"] == ["python", "-m", "ops", "topics"]


def test_compose_runs_the_services_on_kafka_and_their_own_databases() -> None:
    services = resolved_compose()["services"]
    for name in ("gateway", *STREAM_SERVICES):
        env = services[name]["environment"]
        assert env["ZORGPOT_BROKER_PROFILE"] == "kafka", name
        assert env["ZORGPOT_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert env[f"ZORGPOT_{name.upper()}_DB"].startswith(f"postgresql+asyncpg://{name}:"), name
        assert env[f"ZORGPOT_{name.upper()}_DB"].endswith(f"@postgres:5432/{name}"), name
        # Exit code 75 (broker epoch changed) and crashes are restarted by compose.
        assert services[name]["restart"] in ("unless-stopped", "always"), name
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        health = " ".join(services[name]["healthcheck"]["test"])
        path = "/health" if name == "gateway" else "/internal/health"
        port = 8000 if name == "gateway" else STREAM_SERVICES[name]
        assert f"http://127.0.0.1:{port}{path}" in health, name
    assert services["gateway"]["environment"]["ZORGPOT_COORDINATOR_TOKEN"] == "CHANGE-ME-zp_coordinator_token"


def test_secrets_come_from_env_and_env_is_never_committed() -> None:
    text = COMPOSE.read_text()
    for secret in ("ZORGPOT_COORDINATOR_TOKEN", "POSTGRES_PASSWORD", "GATEWAY_DB_PASSWORD", "HOURS_DB_PASSWORD",
                   "BUDGET_DB_PASSWORD", "SETTLEMENT_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}:?" in text, f"{secret} must be required from .env, without a default"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == "", ".env (real secrets) is committed"


def test_dockerfile_is_pinned_installs_from_the_lock_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    assert "pip install -c requirements.lock ." in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")


# -- Prometheus ----------------------------------------------------------------------------------------------
def test_prometheus_config_and_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")])
    # Unit tests of the rules: warning/exceeded, reconciliation, lag growing, service down or absent.
    run([promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml")])


# -- PostgreSQL init script ----------------------------------------------------------------------------------
def test_postgres_init_script_gives_each_service_its_own_database_and_user() -> None:
    from services.budget.books import metadata as budget_tables
    from shared.db import create_tables, make_engine
    from tests.integration.postgres import SUPERUSER, PostgresServer

    server = PostgresServer(free_port()).start()
    try:
        env = dict(os.environ, POSTGRES_USER=SUPERUSER, PGHOST="127.0.0.1", PGPORT=str(server.port),
                   **{f"{s.upper()}_DB_PASSWORD": f"pw-{s}" for s in ("gateway", "hours", "budget", "settlement")})
        done = subprocess.run(["bash", str(INIT_DB)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        owners = dict(line.split("|") for line in server.psql(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname IN "
            "('gateway', 'hours', 'budget', 'settlement')").split())
        assert owners == {s: s for s in ("gateway", "hours", "budget", "settlement")}

        async def worker_starts() -> None:
            engine = make_engine(f"postgresql+asyncpg://budget:pw-budget@127.0.0.1:{server.port}/budget")
            try:
                await create_tables(engine, budget_tables)  # the service creates its own tables at start
            finally:
                await engine.dispose()

        async def three_workers_start_at_once() -> None:  # compose up --scale budget=3 on an empty database
            await asyncio.gather(*(worker_starts() for _ in range(3)))

        asyncio.run(three_workers_start_at_once())
        assert "ledger" in server.psql("SELECT tablename FROM pg_tables WHERE tableowner = 'budget'", "budget").split()
        # Database per service: the hours user cannot even connect to the budget database.
        denied = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(server.port), "-U", "hours", "-d", "budget",
                                 "-c", "select 1"], capture_output=True, text=True)
        assert denied.returncode != 0 and "permission denied" in denied.stderr, denied.stderr
    finally:
        server.stop()


# -- metric names: dashboard and alerts against a live scrape ------------------------------------------------
def metric_names_in(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values are not names
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words - PROMQL_WORDS if "_" in w or w == "up"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    assert exprs
    return exprs


def alert_exprs() -> list[str]:
    text = (PROMETHEUS / "alerts.yml").read_text()
    # The rule expressions and the queries inside annotation templates.
    exprs = re.findall(r'printf \\?"([^"\\]*)', text)
    blocks = re.findall(r"expr: >-\n((?:\s{10,}.*\n)+)|expr: (.+)", text)
    exprs += [(block or line) for block, line in blocks]
    return exprs


def scrape(stack: Stack) -> dict[str, set[str]]:
    """name -> the services exporting it, with sample names of counters/histograms (`_total`, `_bucket`...)."""
    urls = {"gateway": f"{stack.gateway_url}/metrics",
            **{s: f"{stack.service_url(s)}/metrics" for s in STREAM_SERVICES}}
    exported: dict[str, set[str]] = {"up": {"prometheus"}}  # Prometheus' own per-target series
    for service, url in urls.items():
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            names = {family.name} | {sample.name for sample in family.samples}
            if family.type == "counter":
                names.add(f"{family.name}_total")
            for name in names:
                exported.setdefault(name, set()).add(service)
    return exported


def test_dashboard_and_alerts_name_only_metrics_the_services_export(api: Api) -> None:
    region = Region(api).build()
    reg = region.registration("deploy-metrics-1", minutes=90)
    assert api.post("/hours", json=reg).status_code == 202
    assert api.wait_status(reg["registration_id"], {"accepted"})["status"] == "accepted"
    budget_metrics = f"{api.stack.service_url('budget')}/metrics"
    deadline = time.monotonic() + 60
    while f'arrangement="{region.arrangement_id}"' not in httpx.get(budget_metrics, timeout=10).text:
        assert time.monotonic() < deadline, "the budget service never published the pot's gauges"
        time.sleep(0.5)
    exported = scrape(api.stack)

    used_by_dashboard = set().union(*(metric_names_in(e) for e in dashboard_exprs()))
    used_by_alerts = set().union(*(metric_names_in(e) for e in alert_exprs()))
    assert {"zorgpot_pot_spent_cents", "zorgpot_pot_cap_cents", "zorgpot_pot_burn_ratio",
            "zorgpot_pot_forecast_cents", "zorgpot_pot_savings_cents", "zorgpot_pot_non_resident_share",
            "zorgpot_pot_minutes_by_task_category", "zorgpot_reconciliation_cents"} <= used_by_dashboard
    assert {"zorgpot_pot_status", "zorgpot_reconciliation_cents", "zorgpot_consumer_lag_messages",
            "up"} <= used_by_alerts
    assert used_by_dashboard - set(exported) == set(), "the dashboard names metrics nobody exports"
    assert used_by_alerts - set(exported) == set(), "the alert rules name metrics nobody exports"

    # The pot figures really carry this arrangement's series (not only a HELP line).
    text = httpx.get(budget_metrics, timeout=10).text
    for name in ("zorgpot_pot_spent_cents", "zorgpot_pot_cap_cents", "zorgpot_pot_burn_ratio",
                 "zorgpot_pot_forecast_cents", "zorgpot_pot_savings_cents", "zorgpot_pot_non_resident_share",
                 "zorgpot_pot_minutes_by_task_category", "zorgpot_reconciliation_cents", "zorgpot_pot_status"):
        assert re.search(rf'^{name}\{{[^}}]*arrangement="{region.arrangement_id}"', text, re.M), name


@pytest.mark.parametrize("expr, names", [
    ('max by (arrangement, school) (zorgpot_pot_spent_cents{arrangement=~"$a"}) / 100', {"zorgpot_pot_spent_cents"}),
    ("sum by (service) (rate(zorgpot_events_processed_total[5m]))", {"zorgpot_events_processed_total"}),
    ('label_replace(absent(up{job="budget"} == 1), "job", "budget", "", "")', {"up"}),
])
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


def test_alert_expressions_are_all_found() -> None:
    exprs = alert_exprs()
    rules = len(re.findall(r"^\s+- alert: ", (PROMETHEUS / "alerts.yml").read_text(), re.M))
    assert len([e for e in exprs if "zorgpot_" in e or "up{" in e]) >= rules


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    datasource = (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    provider = (ROOT / "deploy/grafana/provisioning/dashboards/zorgpot.yml").read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    uid = re.search(r"uid: (\S+)", datasource).group(1)
    assert "url: http://prometheus:9090" in datasource
    assert all(panel["datasource"]["uid"] == uid for panel in dashboard["panels"] if panel["type"] != "row")
    mounted = resolved_compose()["services"]["grafana"]["volumes"]
    dashboards_dir = re.search(r"path: (\S+)", provider).group(1)
    # docker-compose v1 prints volumes as "source:target:mode", v2 as mappings.
    pairs = [(v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2]) for v in mounted]
    assert any(target == dashboards_dir and source.endswith("deploy/grafana/dashboards") for source, target in pairs)
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Spent vs cap per pot", "Burn ratio", "Forecast at the end vs cap", "Savings vs individual funding",
            "Non-resident share", "Care minutes by task category"} <= titles


def test_env_example_names_every_variable_compose_needs() -> None:
    needed = set(re.findall(r"\$\{([A-Z_]+)(?::?[?-])", COMPOSE.read_text()))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    assert required <= example, required - example
    assert needed - example <= {"ZORGPOT_LOG_LEVEL", "ZORGPOT_IMAGE_TAG", "KAFKA_HEAP_OPTS", "ZORGPOT_PUBLISH_ADDR",
                                "ZORGPOT_PUBLISH_PORT", "PROMETHEUS_PUBLISH_ADDR", "GRAFANA_PUBLISH_ADDR"}
