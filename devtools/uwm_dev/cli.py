"""`uwm-dev`: the developers' tools, apart from the operator (`uwm-upgrade`) and the simulators (`uwm-sim`).

    uwm-dev testbed up|down|status|build [--dir DIR]   the local control plane and PostgreSQL (envtest style)
    uwm-dev demo [--timeout S] [--settle-seconds S] [--install-seconds S]
                                                       test bed + simulated estate + operator + the example plan
    uwm-dev bench-fleet [...]                          start an N-server simulator fleet and print figures
    uwm-dev campaign [--runs N] [--seed S] [...]        the seeded failure campaign (`make campaign`)
    uwm-dev tools build [NAME ...]                     the Go tools the tests judge with (kstatus, kubeconform)

None of it ships in the operator's image: it runs only from a checkout (`make venv`).
"""

from __future__ import annotations

import argparse
import sys
from enum import StrEnum


class TestbedAction(StrEnum):
    __test__ = False  # not a pytest test class, despite its name

    UP = "up"
    DOWN = "down"
    STATUS = "status"
    BUILD = "build"


def _testbed(args: argparse.Namespace) -> int:
    from .testbed import assets
    from .testbed.bed import Testbed

    action = TestbedAction(args.action)
    bed = Testbed.at(args.dir)
    try:
        if action is TestbedAction.UP:
            bed.up()
            print(bed.describe())
        elif action is TestbedAction.DOWN:
            bed.down()
        elif action is TestbedAction.STATUS:
            print(bed.describe())
            return 0 if bed.healthy() else 1
        else:
            print(f"[testbed] assets: {assets.resolve().describe()}")
    except (assets.AssetError, RuntimeError) as exc:
        print(f"uwm-dev testbed {action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(timeout=args.timeout, settle=args.settle_seconds, install=args.install_seconds)


def _bench_fleet(args: argparse.Namespace) -> int:
    from .bench_fleet import main as bench

    return bench(args.bench_args)


def _campaign(args: argparse.Namespace) -> int:
    from .campaign.runner import main as campaign

    return campaign(args.campaign_args)


def _tools(args: argparse.Namespace) -> int:
    from . import gotools
    from .testbed.assets import AssetError

    try:
        for name in args.names or sorted(gotools.TOOLS):
            print(f"[tools] {name}: {gotools.build(name)}")
    except AssetError as exc:
        print(f"uwm-dev tools build: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uwm-dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tb = sub.add_parser("testbed", help="a local control plane and PostgreSQL (envtest style)")
    tb.add_argument("action", choices=[a.value for a in TestbedAction])
    tb.add_argument("--dir", default=".testbed", help="where the test bed keeps its state (default: .testbed)")
    tb.set_defaults(func=_testbed)
    demo = sub.add_parser("demo", help="test bed + simulated estate + operator + the example plan, shown live")
    demo.add_argument("--timeout", type=float, default=900.0)
    demo.add_argument("--settle-seconds", type=float, default=1.0, help="the simulators' settle delay")
    demo.add_argument("--install-seconds", type=float, default=1.0, help="the simulators' install time")
    demo.set_defaults(func=_demo)
    # Its options are its own (`uwm-dev bench-fleet --help`): they are passed on unparsed.
    bench = sub.add_parser("bench-fleet", add_help=False, help="benchmark an N-server simulator fleet")
    bench.set_defaults(func=_bench_fleet)
    campaign = sub.add_parser("campaign", add_help=False, help="the seeded failure campaign")
    campaign.set_defaults(func=_campaign)
    tools = sub.add_parser("tools", help="the Go tools the tests judge with, built once and cached")
    tools.add_argument("action", choices=["build"])
    tools.add_argument("names", nargs="*", help="kstatus, kubeconform (default: both)")
    tools.set_defaults(func=_tools)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench-fleet":
        args.bench_args = rest
    elif args.command == "campaign":
        args.campaign_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
