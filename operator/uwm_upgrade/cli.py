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


def _run(args: argparse.Namespace) -> int:
    from .runner import run_operator

    return run_operator(
        namespaces=args.namespace, all_namespaces=args.all_namespaces, selector=args.selector,
        log_format=args.log_format, verbose=args.verbose, liveness_port=args.liveness_port,
        metrics_port=args.metrics_port, standalone=args.standalone, install_timeout=args.install_timeout,
    )


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(timeout=args.timeout, settle=args.settle_seconds, install=args.install_seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uwm-upgrade", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tb = sub.add_parser("testbed", help="a local control plane and PostgreSQL (envtest style)")
    tb.add_argument("action", choices=["up", "down", "status", "build"])
    tb.add_argument("--dir", default=".testbed", help="where the test bed keeps its state (default: .testbed)")
    tb.set_defaults(func=_testbed)
    run = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig or in-cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable; glob patterns allowed); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster")
    run.add_argument("-l", "--selector", default="",
                     help="only plans whose labels match, e.g. 'team=vdi,env!=prod' (=, ==, !=, key, !key)")
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="plain")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--liveness-port", type=int, default=8080, help="serves /healthz (0 disables)")
    run.add_argument("--metrics-port", type=int, default=9090, help="serves Prometheus /metrics (0 disables)")
    run.add_argument("--standalone", action="store_true", help="no peering with other operator replicas")
    run.add_argument("--install-timeout", type=float, default=None, metavar="SECONDS",
                     help="fail a server's install step after this long (default 1800)")
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="test bed + simulated estate + operator + the example plan, shown live")
    demo.add_argument("--timeout", type=float, default=900.0)
    demo.add_argument("--settle-seconds", type=float, default=1.0, help="the simulators' settle delay")
    demo.add_argument("--install-seconds", type=float, default=1.0, help="the simulators' install time")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
