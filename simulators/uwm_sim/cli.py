"""`uwm-sim`: run a simulated UWM estate described in a fleet YAML file.

    uwm-sim fleet FILE [--only NAME,...] [--reset] [--json] [--ephemeral-ports]
                                                              start it; Ctrl-C or SIGTERM stops it
    uwm-sim check FILE                                        validate the file and print the topology

`fleet` prints one line per server and load balancer (name, kind, URL, status page), then a line
starting with `ready`; with `--json` a single JSON object instead. Exit status: 0 after a clean
stop, 2 for a bad configuration, 1 when the fleet could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import signal
import sys
from pathlib import Path

from .config import ConfigError, load_fleet
from .db import DatabaseError
from .fleet import Fleet, FleetError


async def _run(args: argparse.Namespace) -> int:
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    cfg = load_fleet(args.file)
    if args.ephemeral_ports:
        for server in cfg.servers:
            server.port = 0
        for lb in cfg.load_balancers:
            lb.port = 0
    fleet = Fleet(cfg, only=only, reset=args.reset)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await fleet.start()
    try:
        if args.json:
            print(json.dumps({**running.as_json(), "ready": True}), flush=True)
        else:
            for line in running.lines():
                print(line, flush=True)
            print(f"ready: {len(running.servers)} servers, {len(running.load_balancers)} load balancers "
                  f"in {running.started_in:.2f} s", flush=True)
        await stop.wait()
    finally:
        await fleet.stop()
    if not args.json:
        print("stopped", flush=True)
    return 0


def _check(args: argparse.Namespace) -> int:
    cfg = load_fleet(args.file)
    print(f"releases: {', '.join(cfg.releases)}")
    for d in cfg.databases:
        print(f"database {d.name} {d.kind} schema={d.schema_version}")
    for s in cfg.servers:
        print(f"server {s.name} {s.kind} port={s.bind_port} db={s.database} version={s.version} "
              f"lb={s.load_balanced} role={s.replication_role}")
    for lb in cfg.load_balancers:
        print(f"loadBalancer {lb.name} port={lb.port} servers={','.join(lb.servers)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uwm-sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    fl = sub.add_parser("fleet", help="start the estate described in FILE")
    fl.add_argument("file", type=Path)
    fl.add_argument("--only", help="comma-separated servers and load balancers to run in this process")
    fl.add_argument("--reset", action="store_true", help="drop the simulator's and UWM tables first")
    fl.add_argument("--json", action="store_true", help="print the endpoints as one JSON line")
    fl.add_argument("--ephemeral-ports", action="store_true", help="listen on free ports instead of the file's")
    ck = sub.add_parser("check", help="validate FILE")
    ck.add_argument("file", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A crash inside a native driver (psqlODBC was seen to segfault when PostgreSQL restarted under it)
    # then leaves the Python stacks of every thread in the log instead of nothing.
    faulthandler.enable(all_threads=True)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "check":
            return _check(args)
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"uwm-sim: configuration error: {exc}", file=sys.stderr)
        return 2
    except (FleetError, DatabaseError) as exc:
        print(f"uwm-sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
