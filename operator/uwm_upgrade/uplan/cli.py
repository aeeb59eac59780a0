"""`kubectl uplan COMMAND NAME`: watch and steer UpgradePlans.

    status NAME [-w] [--all] [-o text|json]   one screen: hops, steps with durations, servers, databases,
                                               conditions (-w: follow until the plan is over)
    approve NAME [--yes]                       show the plan, then approve exactly it (its status.planHash)
    pause NAME | resume NAME                   stop at the next safe point / go on from there
    retry NAME                                 a Failed plan goes on from its failed step (spec.retry + 1)
    abort NAME [--rollback]                    stop at the next safe point; roll the hop back where safe
    wait NAME [--timeout 1h]                   exit 0 on Succeeded, 1 at once on Failed/RolledBack (why)
    report NAME [-f FILE] [--since 24h]        a support bundle (.tar.gz), secrets redacted

Global: -n/--namespace, --context, --kubeconfig (as kubectl's). Exit codes: 0 done, 1 the plan failed or
the command was refused, 3 `wait` timed out, 4 the cluster could not be asked (kubectl's message).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .kubectl import Kubectl, KubectlError
from .show import TERMINAL, condition, render, settled

APPROVE_ANNOTATION = "upgrade.uwm.io/approve"
NEVER_RETRIED = ("MigrationFailed", "MigrationUnconfirmed")
POLL_SECONDS = 1.0
REFUSED, TIMED_OUT, UNREACHABLE = 1, 3, 4


class Refused(Exception):  # noqa: N818 (what the user asked cannot be done: said, not raised)
    """The command does not apply to the plan as it is; the message says why and what to do."""


def _phase(plan: dict[str, Any]) -> str:
    return str((plan.get("status") or {}).get("phase") or "Pending")


def _duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h)") from None


# ---------------------------------------------------------------- commands


def status(k: Kubectl, args: argparse.Namespace) -> int:
    while True:
        plan = k.plan(args.name)
        if args.output == "json":
            print(json.dumps(plan.get("status") or {}, indent=2))
        else:
            if args.watch and sys.stdout.isatty():
                print("\033[H\033[J", end="")
            print(render(plan, every_hop=args.all), flush=True)
        if not args.watch or (_phase(plan) in TERMINAL and settled(plan)):
            return 0
        time.sleep(2.0)
        if not sys.stdout.isatty() and args.output != "json":
            print("---")


def approve(k: Kubectl, args: argparse.Namespace) -> int:
    plan = k.plan(args.name)
    digest = (plan.get("status") or {}).get("planHash")
    if _phase(plan) != "AwaitingApproval" or not digest:
        raise Refused(f"{args.name} is {_phase(plan)}, not AwaitingApproval: there is no plan to approve")
    print(render(plan, every_hop=True))
    print(f"\nApproving exactly this plan: {APPROVE_ANNOTATION}={digest}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise Refused("not a terminal: pass --yes to approve without being asked")
        if input("Approve? [y/N] ").strip().lower() not in ("y", "yes"):
            raise Refused("not approved")
    k.run("annotate", "--overwrite", "upgradeplans.upgrade.uwm.io", args.name, f"{APPROVE_ANNOTATION}={digest}")
    print(f"approved {args.name} ({digest[:12]}…)")
    return 0


def pause(k: Kubectl, args: argparse.Namespace) -> int:
    k.patch_spec(args.name, {"paused": args.command == "pause"})
    print(f"{args.name}: {'pausing at the next safe point' if args.command == 'pause' else 'resuming'}")
    return 0


def retry(k: Kubectl, args: argparse.Namespace) -> int:
    plan = k.plan(args.name)
    if _phase(plan) != "Failed":
        raise Refused(f"{args.name} is {_phase(plan)}: only a Failed plan is retried")
    failed = condition(plan, "Failed")
    if failed.get("reason") in NEVER_RETRIED:
        raise Refused(f"{args.name} failed with {failed['reason']}: a schema migration is never requested again;"
                      " restore the database from the verified backup the Failed condition names, click CLOSE in"
                      " the portal, then delete and recreate the plan")
    count = int((plan.get("spec") or {}).get("retry") or 0) + 1
    k.patch_spec(args.name, {"retry": count})
    print(f"{args.name}: retry {count} asked. The operator first checks that the spec still describes the plan"
          " that ran and that every server and database is observed, who the spec says and where the plan"
          " stopped; then the failed step is judged again from the estate (a failed install is asked again).")
    print(f"It failed with: {failed.get('reason')}: {failed.get('message', '')[:400]}")
    return 0


def abort(k: Kubectl, args: argparse.Namespace) -> int:
    plan = k.plan(args.name)
    if _phase(plan) in TERMINAL:
        raise Refused(f"{args.name} is {_phase(plan)}: it is over already")
    mode = "Rollback" if args.rollback else "Halt"
    current = (plan.get("spec") or {}).get("abort")
    if current is not None:
        raise Refused(f"{args.name} is being aborted already ({current}); an abort cannot be changed")
    k.patch_spec(args.name, {"abort": mode})
    what = "and roll the current hop back where the data-safety rules allow a restore" if args.rollback else \
        "and halt there (phase Failed, reason Aborted)"
    print(f"{args.name}: aborting at the next safe point {what}")
    return 0


def wait(k: Kubectl, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    while True:
        plan = k.plan(args.name)
        phase = _phase(plan)
        if settled(plan) and phase == "Succeeded":
            print(f"{args.name} Succeeded: {(plan.get('status') or {}).get('message', '')}")
            return 0
        if settled(plan) and phase in ("Failed", "RolledBack"):
            failed = condition(plan, "Failed")
            print(f"{args.name} {phase} ({failed.get('reason')}): {failed.get('message', '')}", file=sys.stderr)
            return REFUSED
        if time.monotonic() >= deadline:
            print(f"{args.name} is still {phase} after {args.timeout:.0f} s", file=sys.stderr)
            return TIMED_OUT
        time.sleep(POLL_SECONDS)


def bundle(k: Kubectl, args: argparse.Namespace) -> int:
    from .report import report  # the redaction's models: only this command needs them

    target = Path(args.file or f"uplan-{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    written = report(k, args.name, target, args.operator_namespace, args.since)
    print(f"wrote {written}")
    return 0


COMMANDS = {"status": status, "approve": approve, "pause": pause, "resume": pause, "retry": retry,
            "abort": abort, "wait": wait, "report": bundle}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl uplan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--context")
    parser.add_argument("--kubeconfig")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        cmd = sub.add_parser(name)
        cmd.add_argument("name", help="the UpgradePlan")
        cmd.add_argument("-n", "--namespace", dest="sub_namespace")
        if name == "status":
            cmd.add_argument("-w", "--watch", action="store_true")
            cmd.add_argument("--all", action="store_true", help="the steps of every hop")
            cmd.add_argument("-o", "--output", choices=["text", "json"], default="text")
        elif name == "approve":
            cmd.add_argument("--yes", action="store_true", help="do not ask")
        elif name == "abort":
            cmd.add_argument("--rollback", action="store_true")
        elif name == "wait":
            cmd.add_argument("--timeout", type=_duration, default=_duration("1h"))
        elif name == "report":
            cmd.add_argument("-f", "--file")
            cmd.add_argument("--since", default="24h", help="operator logs of this long (kubectl logs --since)")
            cmd.add_argument("--operator-namespace", help="where the operator runs (default: the plan's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    k = Kubectl(args.sub_namespace or args.namespace, args.context, args.kubeconfig)
    try:
        return COMMANDS[args.command](k, args)
    except Refused as exc:
        print(f"kubectl uplan {args.command}: {exc}", file=sys.stderr)
        return REFUSED
    except KubectlError as exc:
        print(f"kubectl uplan {args.command}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
