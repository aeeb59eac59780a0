"""The campaign's judge reads what a Failed condition says of each server from the estate it describes."""

from __future__ import annotations

from uwm_dev.campaign.judge import _segment

MESSAGE = ("RollbackUnsafe at hop 1, step InstallServer, server ms-2: InstallServer ms-2 did not finish within 30s:"
           " ms-2 installing. Not rolled back: pers-db (ps-1 has served clients on 2023.1 since 2026-12-01T18:16:20Z)"
           ". Estate: ms-1 2023.1 Running out of rotation; ms-2 2021.1 Installing out of rotation; ps-1 2023.1"
           " Running master replication off; mgmt-db schema 2023.1")


def test_a_server_named_in_the_reason_is_judged_by_the_estate_part() -> None:
    assert _segment(MESSAGE, "ms-2") == "2021.1 Installing out of rotation"
    assert _segment(MESSAGE, "ps-1") == "2023.1 Running master replication off"
    assert _segment(MESSAGE, "ps-3") is None


def test_a_message_without_an_estate_part_is_read_whole() -> None:
    assert _segment("halted: ms-1 out of rotation; ms-2 at 2021.1", "ms-2") == "at 2021.1"
