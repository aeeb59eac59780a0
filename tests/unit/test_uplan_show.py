"""`kubectl uplan status` on a plan whose first hop is over: its steps were summarised (status.path[].summary),
so the hops table says how that hop went."""

from __future__ import annotations

from datetime import UTC, datetime

from uwm_upgrade.uplan.show import render


def test_a_summarised_hop_says_how_it_went() -> None:
    plan = {"metadata": {"namespace": "uwm", "name": "estate"}, "spec": {"targetVersion": "2025.1"},
            "status": {"phase": "Running", "currentHop": 2, "path": [
                {"from": "2021.1", "to": "2023.1", "summary": {
                    "succeeded": 14, "skipped": 2, "startedAt": "2026-12-01T10:00:00Z",
                    "finishedAt": "2026-12-01T10:12:30Z", "firstServers": {"mgmt-db": "ms-1", "pers-db": "ps-1"}}},
                {"from": "2023.1", "to": "2025.1"}]}}
    screen = render(plan, now=datetime(2026, 12, 1, 11, 0, tzinfo=UTC))
    first = next(line for line in screen.splitlines() if "2021.1 -> 2023.1" in line)
    assert "done in 12m30s: 14 steps succeeded, 2 skipped; schema first: mgmt-db by ms-1, pers-db by ps-1" in first
    second = next(line for line in screen.splitlines() if "2023.1 -> 2025.1" in line)
    assert second.startswith("  > 2") and "done" not in second
