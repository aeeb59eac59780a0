"""The independent journal audit, on journals written by hand: a clean run has no finding, and each way of
breaking the guide is found, named by its rule and the journal entry that shows it.

The journals imitate what the simulators write (ops, outcomes, detail fields of docs/contracts.md); the
audit's verdicts are checked against the guide's words, never against the simulators' or the operator's
rule code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uwm_dev.referee.audit import Backup, Expect, Topology, as_before, audit, replay

RELEASES = ("2021.1", "2022.1", "2023.1", "2024.1", "2025.1")
TOP = Topology(RELEASES, {"ms-pool": frozenset({"ms-1", "ms-2"})}, settle_seconds=1.0,
               schemas={"mgmt-db": "2021.1", "pers-db": "2021.1"})


@dataclass
class Ev:
    seq: int
    ts: float
    server: str | None
    database: str | None
    op: str
    outcome: str = "ok"
    detail: dict[str, Any] = field(default_factory=dict)


class Journal:
    """A journal written step by step; every entry one second after the last unless `at` is given."""

    def __init__(self) -> None:
        self.events: list[Ev] = []
        self.t = 1000.0
        self.db = {"ms-1": "mgmt-db", "ms-2": "mgmt-db", "ps-1": "pers-db", "ps-2": "pers-db", "ps-3": "pers-db"}

    def add(self, server: str | None, op: str, outcome: str = "ok", at: float | None = None, **detail: Any) -> Ev:
        self.t = at if at is not None else self.t + 1.0
        e = Ev(len(self.events) + 1, self.t, server, self.db.get(server or ""), op, outcome, detail)
        self.events.append(e)
        return e

    def register_estate(self) -> Journal:
        for name in ("ms-1", "ms-2"):
            self.add(name, "register", snapshot=snap(name, "Management", "mgmt-db", loadBalanced=True, inRotation=True))
        self.add("ps-1", "register", snapshot=snap("ps-1", "Personalization", "pers-db", role="Master"))
        for name in ("ps-2", "ps-3"):
            self.add(name, "register", snapshot=snap(name, "Personalization", "pers-db", role="Subscriber"))
        return self

    def install(self, server: str, frm: str, to: str) -> None:
        self.add(server, "install", **{"from": frm, "to": to})
        self.add(server, "install-complete", **{"from": frm, "to": to})

    def migrate(self, server: str, frm: str, to: str) -> None:
        self.add(server, "schema-migrate", **{"from": frm, "to": to})
        self.add(server, "schema-migrated", **{"from": frm, "to": to})


def snap(name: str, kind: str, database: str, role: str = "None", **extra: Any) -> dict[str, Any]:
    replicated = role != "None"
    return {"name": name, "kind": kind, "database": database, "version": "2021.1", "role": role,
            "group": "default" if replicated else None, "replicationEnabled": replicated,
            "loadBalanced": False, "inRotation": True, **extra}


def good_hop(j: Journal, backups: list[Backup], frm: str = "2021.1", to: str = "2023.1") -> None:
    """One hop as the guide wants it: replication off, the pool out, backups, database first, then the rest."""
    for name in ("ps-1", "ps-2", "ps-3"):
        j.add(name, "replication", enabled=False, changed=True)
    for name in ("ms-1", "ms-2"):
        j.add(name, "rotation", inRotation=False, changed=True)
    for first, db in (("ms-1", "mgmt-db"), ("ps-1", "pers-db")):
        j.t += 1
        backups.append(Backup(db, f"b-{db}-{to}", j.t, frm, True))
        j.install(first, frm, to)
        j.migrate(first, frm, to)
    for name in ("ms-2", "ps-2", "ps-3"):
        j.install(name, frm, to)
    j.t += 2  # settled
    for name in ("ms-1", "ms-2"):
        j.add(name, "rotation", inRotation=True, changed=True)
    for name in ("ps-1", "ps-2", "ps-3"):
        j.add(name, "replication", enabled=True, changed=True)


def rules(found: list[Any]) -> list[str]:
    return [f.rule for f in found]


def test_a_run_by_the_guide_has_no_finding() -> None:
    j, backups = Journal().register_estate(), []
    good_hop(j, backups)
    good_hop(j, backups, "2023.1", "2025.1")
    result = replay(j.events, TOP, backups)
    expect = as_before(result, ["ms-1", "ms-2", "ps-1", "ps-2", "ps-3"], "2025.1")
    assert audit(j.events, TOP, backups, expect=expect, data_before={"a": "1"}, data_after={"a": "1"}) == []
    assert result.databases["mgmt-db"].schema == "2025.1"


def test_one_pool_member_at_a_time_is_found() -> None:
    j = Journal().register_estate()
    for name in ("ps-1", "ps-2", "ps-3"):
        j.add(name, "replication", enabled=False, changed=True)
    j.add("ms-1", "rotation", inRotation=False, changed=True)
    j.install("ms-1", "2021.1", "2023.1")  # ms-2 still serves the pool's address
    found = audit(j.events, TOP, [Backup("mgmt-db", "b", 0.0, "2021.1", True)])
    assert rules(found) == ["pool-in-rotation"] and "ms-2 of its pool was in rotation" in found[0].message


def test_a_second_server_before_the_schema_is_found() -> None:
    j, backups = Journal().register_estate(), [Backup("mgmt-db", "b", 1.0, "2021.1", True)]
    for name in ("ps-1", "ps-2", "ps-3"):
        j.add(name, "replication", enabled=False, changed=True)
    for name in ("ms-1", "ms-2"):
        j.add(name, "rotation", inRotation=False, changed=True)
    j.install("ms-1", "2021.1", "2023.1")
    j.install("ms-2", "2021.1", "2023.1")  # before ms-1 upgraded mgmt-db
    found = audit(j.events, TOP, backups)
    assert rules(found) == ["database-first"]
    assert "mgmt-db was at 2021.1 and ms-1 already had" in found[0].message


def test_an_install_on_a_server_without_a_role_while_its_database_group_replicates_is_found() -> None:
    j = Journal()
    j.add("ms-1", "register", snapshot=snap("ms-1", "Management", "mgmt-db"))
    j.add("ps-1", "register", snapshot=snap("ps-1", "Personalization", "pers-db", role="Master"))
    j.add("ps-2", "register", snapshot=snap("ps-2", "Personalization", "pers-db", role="Subscriber"))
    j.add("ps-4", "register", snapshot=snap("ps-4", "Personalization", "pers-db"))  # no role, same database
    j.add("ps-1", "replication", enabled=False, changed=True)
    j.install("ps-4", "2021.1", "2022.1")
    found = audit(j.events, Topology(RELEASES, schemas={"pers-db": "2022.1"}), [])
    assert rules(found) == ["replication-enabled"] and "ps-2" in found[0].message


def test_jumps_locks_and_backups() -> None:
    j = Journal().register_estate()
    for name in ("ps-1", "ps-2", "ps-3"):
        j.add(name, "replication", enabled=False, changed=True)
    j.install("ps-1", "2021.1", "2024.1")  # three releases
    j.add("ps-1", "schema-migrate", **{"from": "2021.1", "to": "2024.1"})  # no backup either
    j.add("ps-2", "install", **{"from": "2021.1", "to": "2024.1"})  # while ps-1 holds the lock
    assert rules(audit(j.events, TOP, [])) == ["version-jump", "version-jump", "backup-before-migration",
                                               "version-jump", "schema-locked", "database-first"]


def test_a_backup_from_before_the_last_schema_change_does_not_count() -> None:
    j, backups = Journal().register_estate(), []
    good_hop(j, backups)
    stale = [b for b in backups]  # only hop 1's backups
    good_hop(j, [], "2023.1", "2025.1")
    found = audit(j.events, TOP, stale)
    assert rules(found) == ["backup-before-migration"] * 2


def test_replication_on_during_a_migration_and_rotation_before_the_settle() -> None:
    j = Journal().register_estate()
    for name in ("ps-1", "ps-2", "ps-3"):
        j.add(name, "replication", enabled=False, changed=True)
    for name in ("ms-1", "ms-2"):
        j.add(name, "rotation", inRotation=False, changed=True)
    j.install("ps-1", "2021.1", "2023.1")
    j.add("ps-1", "schema-migrate", **{"from": "2021.1", "to": "2023.1"})
    j.add("ps-2", "replication", enabled=True, changed=True)
    j.add("ms-1", "install", **{"from": "2021.1", "to": "2023.1"})
    done = j.add("ms-1", "install-complete", **{"from": "2021.1", "to": "2023.1"})
    j.add("ms-1", "rotation", at=done.ts + 0.3, inRotation=True, changed=True)
    found = audit(j.events, TOP, [Backup("pers-db", "b", 0.0, "2021.1", True)])
    assert rules(found) == ["replication-during-migration", "rotation-before-confirmed"]
    assert "0.30s after its start" in found[1].message and "mgmt-db is at 2021.1" in found[1].message


def test_nothing_twice_but_a_rollback_may_reinstall() -> None:
    j, backups = Journal().register_estate(), []
    good_hop(j, backups)
    j.install("ms-2", "2023.1", "2021.1")  # a rollback's reinstall: a downgrade
    j.install("ms-2", "2021.1", "2023.1")  # the same upgrade again
    j.add("ms-1", "schema-migrate", **{"from": "2021.1", "to": "2023.1"})
    j.add("ms-1", "schema-migrated", **{"from": "2021.1", "to": "2023.1"})
    found = rules(audit(j.events, TOP, backups))
    assert "install-twice" in found and "migration-twice" in found


def test_refusals_count_but_busy_and_auth_do_not() -> None:
    j = Journal().register_estate()
    j.add("ms-1", "install", "refused", rule="in-rotation", reason="in rotation")
    j.add("ms-1", "install", "refused", rule="busy", reason="installing")
    j.add("ms-1", "auth", "refused")
    assert rules(audit(j.events, TOP, [])) == ["refused"]


def test_the_end_state_and_the_user_data() -> None:
    j = Journal().register_estate()
    j.add("ms-1", "rotation", inRotation=False, changed=True)
    j.add("ps-2", "replication", enabled=False, changed=True)
    result = replay(j.events, TOP)
    expect = {**as_before(result, ["ms-1", "ps-2"], "2021.1"), "ps-9": Expect("2021.1")}
    found = audit(j.events, TOP, expect=expect, data_before={"pers-db": "20:aa"}, data_after={"pers-db": "20:bb"})
    assert [(f.rule, f.server) for f in found] == [("not-restored", "ms-1"), ("not-restored", "ps-2"),
                                                  ("not-restored", "ps-9"), ("data-changed", None)]
    assert found[-1].data_loss and "out of rotation, it was in" in found[0].message


def test_traffic_and_clients_cut_off() -> None:
    j = Journal()
    j.add("ms-1", "register", snapshot=snap("ms-1", "Management", "mgmt-db"))
    j.add("ms-1-new", "register", snapshot=snap("ms-1-new", "Management", "mgmt-db"))
    doc = {"failoverServers": ["ms-1"], "deploymentAgent": "ms-1", "policy": [], "online": {"ms-1": True}}
    j.add(None, "clients-init", clients=doc)
    j.add("ms-1", "server-offline", clients={**doc, "online": {"ms-1": False, "ms-1-new": False}})
    j.add("ms-2", "traffic-out-of-rotation", "failed", path="/x")
    found = audit(j.events, TOP)
    assert rules(found) == ["clients-cut-off", "traffic-out-of-rotation"]
    assert "the Deployment Agent" in found[0].message


def test_clients_holding_a_host_reach_its_default_website() -> None:
    """The guide's "make it the default website": `http://<host>` reaches the host's default website. Moving
    the default website to an online server keeps every client; taking the old one offline first, or moving
    it to a server that is offline, cuts clients off."""
    j = Journal()
    for name, kind in (("ms-1", "Management"), ("ms-1-new", "Management"), ("ps-1", "Personalization"),
                       ("ps-1-new", "Personalization")):
        j.add(name, "register", snapshot=snap(name, kind, "mgmt-db" if kind == "Management" else "pers-db"))
    sites = {"mgmt.test": {"defaultWebsite": "ms-1", "hostHeaders": {"ms-1-new": "new.test"}},
             "pers.test": {"defaultWebsite": "ps-1", "hostHeaders": {"ps-1-new": "pnew.test"}}}
    doc = {"failoverServers": ["ms-1"], "deploymentAgent": None, "deploymentAgentHost": "mgmt.test",
           "policy": [{"defaultWebsite": "pers.test", "url": "http://pers.test"}], "websites": sites,
           "online": {"ms-1": True, "ms-1-new": False, "ps-1": True, "ps-1-new": False}}
    j.add(None, "clients-init", clients=doc)
    assert audit(j.events, TOP) == []
    up = {**doc, "online": {**doc["online"], "ms-1-new": True, "ps-1-new": True},
          "failoverServers": ["ms-1", "ms-1-new"]}
    j.add("ms-1-new", "server-online", clients=up)
    moved = {**up, "websites": {"mgmt.test": {"defaultWebsite": "ms-1-new", "hostHeaders": {}},
                                "pers.test": {"defaultWebsite": "ps-1-new", "hostHeaders": {}}}}
    j.add("ms-1-new", "default-website", clients=moved)
    j.add("ms-1", "server-offline", clients={**moved, "online": {**moved["online"], "ms-1": False, "ps-1": False}})
    assert audit(j.events, TOP) == []  # the order the guide allows: no client ever without a server

    bad = Journal()
    bad.events = j.events[:5]
    bad.t = j.t
    bad.add("ps-1", "server-offline", clients={**doc, "online": {**doc["online"], "ps-1": False}})
    bad.add("ms-1-new", "default-website", clients={**doc, "failoverServers": [], "websites": {
        **sites, "mgmt.test": {"defaultWebsite": "ms-1-new", "hostHeaders": {}}}})  # ms-1-new is offline, no spare
    found = audit(bad.events, TOP)
    assert rules(found) == ["clients-cut-off", "clients-cut-off"]
    assert "the default website of pers.test is ps-1, not online" in found[0].message
    assert "http://mgmt.test (default website ms-1-new) is not online" in found[1].message
