"""`uwm-sim`: start simulated UWM servers (placeholder until the simulators land)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("uwm-sim: not implemented yet", file=sys.stderr)
    return 2
