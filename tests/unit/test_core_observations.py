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
    # hostile values: braced ODBC passwords with `;`, spaces and `}}`, Basic credentials, URL user-info
    ("cannot connect: SERVER=db;UID=sa;PWD={p;a s=s};DATABASE=x", "a s=s"),
    ("cannot connect: SERVER=db;PWD={we}}ird;pw}", "ird;pw"),
    ("Authorization: Basic dXdtOnNlY3JldC1wYXNz", "dXdtOnNlY3JldC1wYXNz"),
    ("GET https://uwm:s3cr%40t@ms-1.corp:7751/agent failed", "s3cr%40t"),
    ("Authorization: Bearer t{o;k}en", "k}en"),
])
def test_credentials_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text) and "***" in redact(text)


def test_the_plan_secret_label_is_no_credential() -> None:
    text = ('Secret ns/x is not labelled upgrade.uwm.io/plan-secret="true": (kubectl label secret -n ns x'
            ' upgrade.uwm.io/plan-secret=true); client-secret=abc')
    assert redact(text) == text.replace("client-secret=abc", "client-secret=***")


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


def test_a_streak_remembers_why_its_release_last_failed_until_another_release_shows() -> None:
    flapped = HealthStreak().record(False, T0, "2023.1", "answered 503: Starting").record(True, later(2), "2023.1")
    assert (flapped.consecutive, flapped.last_failure) == (1, "answered 503: Starting")
    assert flapped.record(False, later(4), None, None).last_failure == "answered 503: Starting"  # no answer
    installed = flapped.record(True, later(6), "2024.1")
    assert (installed.consecutive, installed.version, installed.last_failure) == (1, "2024.1", None)
