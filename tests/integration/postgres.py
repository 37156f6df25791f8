"""A throw-away PostgreSQL server for the test suite: Debian's PostgreSQL binaries, a cluster in a temporary
directory, listening on loopback only, one fresh set of databases per stack.

`ZORGPOT_TEST_DB=postgresql` makes tests/integration/conftest.py start one server per pytest session and
give every stack its own four databases (gateway, hours, budget, settlement), as in the compose deployment.
When PostgreSQL is not installed this raises, so the PostgreSQL run fails loudly instead of skipping
(`ops/system-deps.sh`, run by `make test`, installs it).

initdb refuses to run as root; as root the cluster is created and run as the `postgres` system user (which
Debian's package creates) in a directory handed to that user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

SERVICES = ("gateway", "hours", "budget", "settlement")
SUPERUSER = "zorgpot"


class PostgresUnavailable(RuntimeError):
    pass


def bin_dir() -> Path:
    """The newest installed server's binaries (/usr/lib/postgresql/<major>/bin)."""
    found = sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise PostgresUnavailable(
            "ZORGPOT_TEST_DB=postgresql but no PostgreSQL server is installed (/usr/lib/postgresql/*/bin/initdb "
            "missing). Run `bash ops/system-deps.sh` as root (make test does) or "
            "`apt-get install postgresql`.")
    return found[-1]


class PostgresServer:
    def __init__(self, port: int):
        self.port = port
        self.bin = bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="zorgpot-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self._databases = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    def _run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return subprocess.run(argv, check=True, capture_output=True, text=True, cwd=self.dir, **kwargs)

    def start(self) -> "PostgresServer":
        if self.run_as:
            try:
                user = pwd.getpwnam(self.run_as)
            except KeyError as exc:
                raise PostgresUnavailable(f"running as root and there is no {self.run_as!r} user to run "
                                          "PostgreSQL as (Debian's postgresql package creates it)") from exc
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        try:
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                       "-E", "UTF8", "--locale=C", "--no-sync"])
            # Test-only speed settings: durability against power loss is not what these tests check.
            options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB")
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                       "-w", "-t", "60", "start"])
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            self.stop()
            raise PostgresUnavailable(f"starting PostgreSQL failed: {exc.stderr or exc.stdout}\n{log}") from exc
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------------------
    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                          "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]).stdout

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def fresh_databases(self) -> dict[str, str]:
        """Four new, empty databases (one per service); returns ZORGPOT_<SERVICE>_DB settings for them."""
        self._databases += 1
        env = {}
        for service in SERVICES:
            name = f"stack{self._databases}_{service}"
            self.psql(f"CREATE DATABASE {name}")
            env[f"ZORGPOT_{service.upper()}_DB"] = self.url(name)
        return env

    def recreate_database(self, url: str) -> None:
        """Drop and create one database again, empty (the test of rebuilding a service's books)."""
        name = url.rsplit("/", 1)[1]
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.psql(f"CREATE DATABASE {name}")

    def version(self) -> str:
        return self.psql("SHOW server_version").strip()
