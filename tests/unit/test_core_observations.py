"""Secret-free errors and messages, and the health-confirmation fold the status-page poller keeps."""

from __future__ import annotations

import pytest
from core_builders import T0, later

from uwm_upgrade.core.enums import StepName
from uwm_upgrade.core.observations import HealthStreak, PermanentError, TransientError, Where, redact


@pytest.mark.parametrize(("text", "secret"), [
    ("connect failed: DRIVER={FreeTDS};SERVER=db;UID=sa;PWD=Sup3r!;TDS_Version=7.4", "Sup3r!"),
    ("password=hunter2 rejected", "hunter2"),
    ("401 with Authorization: Bearer eyJhbGciOi.xyz", "eyJhbGciOi.xyz"),
    ("token: 0123456789abcdef in header", "0123456789abcdef"),
])
def test_credentials_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text) and "***" in redact(text)


def test_long_messages_are_cut() -> None:
    assert len(redact("x" * 5000)) == 1024


def test_errors_redact_on_construction_and_say_where() -> None:
    error = PermanentError(Where(1, StepName.INSTALL_SERVER, "ms-2"), "refused; Pwd=abc;", rule="version-jump")
    assert "abc" not in str(error) and str(error).startswith("hop 1, step InstallServer, server ms-2: ")
    assert error.rule == "version-jump"
    assert TransientError(Where(database="mgmt-db"), "timeout").retry_after == 5.0
    assert str(Where()) == "the plan"


def test_a_streak_counts_consecutive_confirmations_of_one_release() -> None:
    streak = HealthStreak()
    assert streak.due(T0, 2)
    streak = streak.record(True, T0, "2023.1").record(True, later(2), "2023.1")
    assert streak.consecutive == 2 and not streak.due(later(3), 2) and streak.due(later(4), 2)
    assert streak.record(False, later(4), "2023.1").consecutive == 0
    assert streak.record(True, later(4), "2024.1").consecutive == 1  # another release starts again
