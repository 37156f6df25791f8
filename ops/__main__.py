"""Operator commands: `python -m ops up | topics | seed | invariant | simulate | replay-from-start | migrate`."""
from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading

from shared.settings import get_settings


def coordinator_token(settings) -> str:  # noqa: ANN001
    """ZORGPOT_COORDINATOR_TOKEN, else the one generated earlier for this data dir, else a new one."""
    if settings.coordinator_token:
        return settings.coordinator_token
    path = settings.data_dir / "coordinator_token"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = f"zp_{secrets.token_urlsafe(32)}"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def up() -> int:
    from ops.demo import seed
    from ops.stack import Stack

    settings = get_settings()
    token = coordinator_token(settings)
    stack = Stack(settings.data_dir, settings.gateway_port, settings.broker_port, token, echo=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        print(f"starting Zorgpot: broker on 127.0.0.1:{settings.broker_port}, data in {stack.data_dir}")
        stack.start_all(timeout=120)
        if settings.demo:
            seed(stack.gateway_url, token)
            print("demo region seeded (ZORGPOT_DEMO=0 to skip)")
        print("\n" + "=" * 72)
        print(f" Zorgpot is up.  Gateway: {stack.gateway_url}/api/v1   (docs: {stack.gateway_url}/docs)")
        print(f" Coordinator token: {token}")
        print(" Ctrl-C stops everything.")
        print("=" * 72 + "\n", flush=True)
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping Zorgpot ...", flush=True)
        stack.stop_all()
        print("stopped.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ops")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start broker, services and demo region in the foreground")
    sub.add_parser("topics", help="create the Kafka topics on ZORGPOT_KAFKA_BOOTSTRAP")
    seed_cmd = sub.add_parser("seed", help="seed the demo region through a running gateway")
    seed_cmd.add_argument("--url", default=None)
    from ops.simulate import add_arguments
    add_arguments(sub.add_parser("simulate", help="stream daily care registrations for the demo region"))
    sub.add_parser("invariant", help="check that all statements add up to the accepted care (exit 1 if not)")
    replay_cmd = sub.add_parser("replay-from-start", help="empty a stopped service's database so that it rebuilds "
                                "its books from offset 0 when started (docs/operations.md)")
    replay_cmd.add_argument("service", choices=["hours", "budget", "settlement"])
    migrate_cmd = sub.add_parser("migrate", help="upgrade a service's database to the newest schema (each service "
                                 "also does this when it starts)")
    migrate_cmd.add_argument("service", choices=["gateway", "hours", "budget", "settlement"])
    args = parser.parse_args()
    settings = get_settings()
    if args.command == "up":
        return up()
    if args.command == "topics":
        from shared.kafka import create_topics
        print("created:", create_topics(settings.bootstrap()) or "nothing (all exist)")
        return 0
    if args.command == "seed":
        from ops.demo import seed
        seed(args.url or f"http://127.0.0.1:{settings.gateway_port}", coordinator_token(settings))
        return 0
    if args.command == "invariant":
        from ops.invariant import check
        return check(settings)
    if args.command == "simulate":
        from ops.simulate import run
        return run(args, coordinator_token(settings), f"http://127.0.0.1:{settings.gateway_port}")
    if args.command == "replay-from-start":
        from ops.replay import ReplayRefused, empty_books
        try:
            dropped = empty_books(settings, args.service)
        except ReplayRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"{args.service}: database emptied ({len(dropped)} tables); start the service now: it reads its "
              "topics from offset 0")
        return 0
    if args.command == "migrate":
        import asyncio

        from shared.db import make_engine
        from shared.migrations import migrate
        asyncio.run(migrate(make_engine(settings.db_url(args.service)), f"services/{args.service}/migrations"))
        print(f"{args.service}: database at the newest schema")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
