"""The `zorgpot` command installed with the project (pyproject.toml [project.scripts]).

`zorgpot upload FILE`: send a CSV or NDJSON file of care registrations to the gateway (ops/upload.py).
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from ops import upload

    parser = argparse.ArgumentParser(prog="zorgpot", description="Zorgpot client for schools' administration systems")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("upload", help="send a CSV or NDJSON file of care registrations in batches",
                              description=(upload.__doc__ or "").split("\n\n")[0])
    upload.add_arguments(sub)
    args = parser.parse_args(argv)  # a usage error exits 2
    try:
        return upload.run(args)
    except KeyboardInterrupt:
        sys.stderr.write("zorgpot upload: interrupted; run the same command again to continue (rows already "
                         "received are counted once)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
