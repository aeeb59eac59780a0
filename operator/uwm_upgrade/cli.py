"""`uwm-upgrade`: what the operator's users run (`run`, `--version`); the developers' tools are `uwm-dev`."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from .adapters.server_policy import PolicyError, ServerPolicy
from .engine.leader import DEFAULT_LEASE_NAME
from .engine.selector import SelectorError, parse
from .settings import LogFormat, Settings, SettingsError


def _version() -> str:
    try:
        return metadata.version("uwm-upgrade-operator")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def settings_from_args(args: argparse.Namespace) -> Settings:
    """`uwm-upgrade run`'s flags as the operator's settings; a bad value raises SettingsError naming its flag."""
    try:
        selector = parse(args.selector)
        policy = ServerPolicy.parse(args.allow_server_host, args.allow_server_cidr, args.allow_insecure_http)
    except (SelectorError, PolicyError) as exc:
        raise SettingsError(str(exc)) from None
    return Settings(namespaces=tuple(args.namespace), all_namespaces=args.all_namespaces, selector=selector,
                    log_format=LogFormat(args.log_format), verbose=args.verbose, liveness_port=args.liveness_port,
                    metrics_port=args.metrics_port, standalone=args.standalone, install_timeout=args.install_timeout,
                    server_policy=policy, lease_name=args.lease_name, lease_seconds=args.lease_seconds,
                    replication_timeout=args.replication_timeout)


def _run(args: argparse.Namespace) -> int:
    from .runner import run_operator

    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"uwm-upgrade run: {exc}", file=sys.stderr)
        return 2
    return run_operator(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uwm-upgrade", description="The UWM upgrade operator: upgrades a User "
                                     "Workspace Manager estate as the vendor's upgrade guide demands.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig or in-cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable; glob patterns allowed); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster")
    run.add_argument("-l", "--selector", default="",
                     help="only plans whose labels match, e.g. 'team=vdi,env!=prod' (=, ==, !=, key, !key)")
    run.add_argument("--log-format", choices=[f.value for f in LogFormat], default=LogFormat.PLAIN.value)
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--liveness-port", type=int, default=8080, help="serves /healthz (0 disables)")
    run.add_argument("--metrics-port", type=int, default=9090, help="serves Prometheus /metrics (0 disables)")
    run.add_argument("--standalone", action="store_true",
                     help="no leader election: act on every plan seen (run one replica only)")
    run.add_argument("--lease-name", default=DEFAULT_LEASE_NAME,
                     help="the Lease replicas elect their leader by, one per namespace of plans (default %(default)s)")
    run.add_argument("--lease-seconds", type=float, default=15.0, metavar="SECONDS",
                     help="how long an unrenewed leadership lasts; a standby takes over within it (default 15)")
    run.add_argument("--install-timeout", type=float, default=None, metavar="SECONDS",
                     help="fail a server's install step after this long (default 1800)")
    run.add_argument("--allow-server-host", action="append", default=[], metavar="PATTERN",
                     help="plans' servers may be on hosts matching this pattern, e.g. '*.uwm.corp.example' "
                     "(repeatable; with none and no --allow-server-cidr: any host, with a warning)")
    run.add_argument("--allow-server-cidr", action="append", default=[], metavar="CIDR",
                     help="plans' servers may be at addresses in this range, e.g. 10.20.0.0/16 (repeatable)")
    run.add_argument("--allow-insecure-http", action="store_true",
                     help="allow plain-http servers for calls that carry the agent token (test beds only)")
    run.add_argument("--replication-timeout", type=float, default=None, metavar="SECONDS",
                     help="fail the subscribers' catch-up step after this long (default 900)")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
