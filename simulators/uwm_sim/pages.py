"""The HTML the simulated servers show: status pages and the Server Configuration Portal.

Why plain functions: the pages are small and fixed; rendering them from data with escaping in one
place keeps the views free of markup and makes the exact words (e.g. "Connection successful",
"Database Updates Required", "Upgrade Successful") easy to find and to assert on.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

PORTAL = "/ServerConfigurationPortal"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>\n"
            f"<body>\n<h1>{escape(title)}</h1>\n{body}\n</body></html>\n")


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class=\"details\">{cells}</table>"


def status_page(title: str, details: Sequence[tuple[str, Any]], tests: Sequence[tuple[str, bool]],
                ok: bool, message: str) -> str:
    items = "".join(f"<li class=\"{'pass' if passed else 'fail'}\">{escape(name)}: "
                    f"{'Pass' if passed else 'Fail'}</li>" for name, passed in tests)
    failed = [name for name, passed in tests if not passed]
    summary = (f"<p id=\"tests-result\" class=\"fail\">Failed tests: {escape(', '.join(failed))}</p>" if failed
               else "<p id=\"tests-result\" class=\"pass\">All tests passed</p>")
    result = f"<p id=\"result\" class=\"{'ok' if ok else 'error'}\">{escape(message)}</p>"
    return page(title, f"{_table(details)}\n<h2>Tests</h2>\n<ul id=\"tests\">{items}</ul>\n{summary}\n{result}")


def portal_page(status: dict[str, Any]) -> str:
    """The "Database Updates Required" page when the database is behind, else status or Summary."""
    required = status["updatesRequired"]
    state = f"<p id=\"status\">Status: {escape(status['status'])}</p>"
    if status.get("error"):
        state += f"<p id=\"error\">{escape(status['error'])}</p>"
    if required:
        rows = "".join(
            f"<tr><td><input type=\"checkbox\" name=\"databases\" value=\"{escape(r['database'])}\" checked></td>"
            f"<td>{escape(r['database'])}</td><td>{escape(str(r['from']))}</td><td>{escape(r['to'])}</td></tr>"
            for r in required)
        form = (f"<form method=\"post\" action=\"{PORTAL}/DatabaseUpdates/UpdateSelected\">"
                f"<table id=\"updates\"><tr><th></th><th>Database</th><th>Current</th><th>Required</th></tr>{rows}"
                "</table><button type=\"submit\">UPDATE SELECTED</button></form>"
                f"<form method=\"post\" action=\"{PORTAL}/DatabaseUpdates/UpdateAll\">"
                "<button type=\"submit\">UPDATE ALL</button></form>")
        return page("Database Updates Required", form + state)
    if status["status"] in ("Upgrading", "Upgrade Successful", "Failed"):
        close = (f"<form method=\"post\" action=\"{PORTAL}/DatabaseUpdates/Close\">"
                 "<button type=\"submit\">CLOSE</button></form>") if status["status"] != "Upgrading" else ""
        return page("Database Updates", state + close)
    return summary_page(status)


def summary_page(status: dict[str, Any]) -> str:
    rows = [("Server", status["server"]), ("Databases", ", ".join(status["databases"])),
            ("Schema version", status.get("schemaVersion") or "unknown")]
    return page("User Workspace Manager Summary", _table(rows))


def index_page(name: str, kind: str, links: Sequence[str]) -> str:
    items = "".join(f"<li><a href=\"{escape(u)}\">{escape(u)}</a></li>" for u in links)
    return page(f"{kind} Server {name} (simulated)", f"<ul>{items}</ul>")
