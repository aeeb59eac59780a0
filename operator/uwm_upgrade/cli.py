"""`uwm-upgrade`: the operator (`run`) and the local test bed (`testbed up|down|status|build`)."""

from __future__ import annotations

import argparse
import sys


def _testbed(args: argparse.Namespace) -> int:
    from .testbed import assets
    from .testbed.bed import Testbed

    bed = Testbed.at(args.dir)
    try:
        if args.action == "up":
            bed.up()
            print(bed.describe())
        elif args.action == "down":
            bed.down()
        elif args.action == "status":
            print(bed.describe())
            return 0 if bed.healthy() else 1
        elif args.action == "build":
            print(assets.resolve())
    except (assets.AssetError, RuntimeError) as exc:
        print(f"uwm-upgrade testbed {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uwm-upgrade", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tb = sub.add_parser("testbed", help="a local control plane and PostgreSQL (envtest style)")
    tb.add_argument("action", choices=["up", "down", "status", "build"])
    tb.add_argument("--dir", default=".testbed", help="where the test bed keeps its state (default: .testbed)")
    tb.set_defaults(func=_testbed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
