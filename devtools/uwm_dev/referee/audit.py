"""An independent audit of a run: the simulators' journal replayed against the upgrade guide.

Why a second referee: the simulators refuse what the guide forbids (`uwm_sim.estate`) and the operator
checks itself (`uwm_upgrade.core.guide`); both are code we wrote from our reading of the guide, and a
mistake shared by the operator's reading and its own tests passes every test. This module is a third,
separate reading: it shares no rule code with either, only the journal's data format. It replays the
journal from its first event (each server's `register`/`start` snapshot, then every accepted change)
and says, with the journal entry that shows it, where the guide was broken:

- no install while replication is on anywhere in a replication group that touches the server's database
  (`replication-enabled`), nor on a load-balanced server while any member of its pool is in rotation
  (`pool-in-rotation`); never more than 2 catalog releases per install or schema migration
  (`version-jump`); nothing installs on a database while another server holds its schema lock
  (`schema-locked`);
- database first (`database-first`): while a database's schema is behind release X, one server of it
  installs X, upgrades the schema, and only then may any other server of it install X; the server that
  migrates runs X and no other server of the database is installing meanwhile (`migration-order`);
- a verified backup of the database, taken after its last schema change, exists before every schema
  migration (`backup-before-migration`, from the `uwm_backups` rows the caller passes in);
- replication is not switched on while a group member's database is locked (`replication-during-migration`);
  no server goes back into rotation before it has settled after its last start, installs or failed
  (`rotation-before-confirmed`); no load-balancer request reaches a server out of rotation
  (`traffic-out-of-rotation`); no client is left reaching no online server (`clients-cut-off`);
- nothing irreversible twice: one accepted install per server and release (a retry after a failed one
  aside: `install-twice`), one successful migration per database and release (`migration-twice`);
- requests the simulators refused on a rule (`refused`): the operator asked for something the guide
  forbids, and only the referee stopped it (`busy` answers are not counted: asking again after a crash is
  how an operator finds an install already under way);
- at the end (when the caller says what to expect): every server back as it was (`not-restored`), user
  data unchanged (`data-changed`, a data loss).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# How far a journal time may lag the moment the simulator stamped the state it records (same transaction).
CLOCK_SLACK = 0.05


class JournalEvent(Protocol):
    """What the audit reads of a journal entry (`uwm_sim.journal.Event` has these fields)."""

    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> float: ...
    @property
    def server(self) -> str | None: ...
    @property
    def database(self) -> str | None: ...
    @property
    def op(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def detail(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Topology:
    """What the journal does not say: the catalog, the load-balancer pools, the settle delay, the schemas
    the databases started at, and whether the plan took backups."""

    releases: tuple[str, ...]
    pools: Mapping[str, frozenset[str]] = field(default_factory=dict)  # pool name -> member servers
    settle_seconds: float = 0.0
    schemas: Mapping[str, str] = field(default_factory=dict)  # database -> schema version at the start
    backups_required: bool = True

    def pool_of(self, server: str) -> frozenset[str]:
        found = frozenset().union(*(m for m in self.pools.values() if server in m))
        return found | {server}

    def position(self, release: str | None) -> int | None:
        return self.releases.index(release) if release in self.releases else None


@dataclass(frozen=True)
class Backup:
    """One row of a UWM database's `uwm_backups` (times as epoch seconds)."""

    database: str
    id: str
    taken_at: float
    schema_version: str | None
    verified: bool


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    seq: int | None = None
    server: str | None = None
    data_loss: bool = False

    def __str__(self) -> str:
        where = f"#{self.seq} " if self.seq is not None else ""
        who = f"{self.server}: " if self.server else ""
        return f"{where}{self.rule}: {who}{self.message}"


@dataclass
class ServerView:
    """One server as the journal shows it so far."""

    name: str
    kind: str
    database: str
    version: str
    role: str
    group: str | None
    replication: bool
    load_balanced: bool
    in_rotation: bool
    started_at: float
    installing: str | None = None
    failed: str | None = None  # the release whose last install failed
    initial: tuple[bool, bool] = (False, False)  # (replication, in rotation) at its first registration


@dataclass
class DatabaseView:
    name: str
    schema: str | None  # None: unknown (a migration failed halfway, or a restore the journal cannot see)
    lock: str | None = None
    changed_at: float = 0.0  # when its schema last changed (as far as the journal shows)


@dataclass(frozen=True)
class Expect:
    """What a server must be at the end of the run; None: not checked."""

    version: str | None = None
    replication: bool | None = None
    in_rotation: bool | None = None


@dataclass
class Replay:
    findings: list[Finding] = field(default_factory=list)
    servers: dict[str, ServerView] = field(default_factory=dict)
    databases: dict[str, DatabaseView] = field(default_factory=dict)
    installs: dict[tuple[str, str], int] = field(default_factory=dict)  # accepted installs that completed ok
    migrations: dict[tuple[str, str], int] = field(default_factory=dict)
    clients: dict[str, Any] | None = None
    cut_off: set[str] = field(default_factory=set)


def _snapshot(e: JournalEvent) -> ServerView:
    s = e.detail["snapshot"]
    return ServerView(name=str(s["name"]), kind=str(s["kind"]), database=str(s["database"]),
                      version=str(s["version"]), role=str(s.get("role") or "None"), group=s.get("group"),
                      replication=bool(s.get("replicationEnabled")), load_balanced=bool(s.get("loadBalanced")),
                      in_rotation=bool(s.get("inRotation")), started_at=e.ts)


class Auditor:
    """The replay, one event at a time (`feed`), so a test can also audit a journal as it grows."""

    def __init__(self, topology: Topology, backups: Iterable[Backup] = ()) -> None:
        self.top = topology
        self.backups = list(backups)
        self.r = Replay(databases={d: DatabaseView(d, v) for d, v in topology.schemas.items()})

    # ------------------------------------------------------------ helpers
    def _bad(self, e: JournalEvent, rule: str, message: str) -> None:
        self.r.findings.append(Finding(rule, message, e.seq, e.server))

    def _db(self, name: str) -> DatabaseView:
        return self.r.databases.setdefault(name, DatabaseView(name, None))

    def _jump(self, a: str | None, b: str | None) -> int | None:
        pa, pb = self.top.position(a), self.top.position(b)
        return None if pa is None or pb is None else abs(pb - pa)

    def _behind(self, schema: str | None, release: str) -> bool:
        ps, pr = self.top.position(schema), self.top.position(release)
        return ps is not None and pr is not None and ps < pr

    def _groups_touching(self, s: ServerView) -> set[str]:
        """The replication groups of `s` and of every server that shares its database."""
        return {o.group for o in self.r.servers.values()
                if o.role != "None" and o.group and (o.database == s.database or o.name == s.name)}

    # ------------------------------------------------------------ the replay
    def feed(self, e: JournalEvent) -> None:
        if e.op in ("register", "start") and "snapshot" in e.detail:
            self._register(e)
            return
        if e.op == "unregister" and e.server:
            self.r.servers.pop(e.server, None)
            return
        if e.op == "traffic-out-of-rotation":
            self._bad(e, "traffic-out-of-rotation", f"a load-balancer request reached {e.server} out of rotation"
                                                    f" ({e.detail.get('path')})")
        if e.op == "clients-cut-off":
            self._bad(e, "clients-cut-off", str(e.detail.get("reason") or "clients reached no server"))
        if "clients" in e.detail and e.outcome != "refused":
            self._clients(e)
        if e.outcome == "refused":
            rule = str(e.detail.get("rule") or "")
            if e.op != "auth" and rule != "busy":
                self._bad(e, "refused", f"{e.op} refused by the simulator ({rule}): {e.detail.get('reason')}")
            return
        s = self.r.servers.get(e.server or "")
        if s is None:
            return
        handler = {"install": self._install, "install-complete": self._installed, "replication": self._replication,
                   "rotation": self._rotation, "schema-migrate": self._migrate, "schema-migrated": self._migrated,
                   "restart": self._restart}.get(e.op)
        if handler is not None:
            handler(e, s)

    def _register(self, e: JournalEvent) -> None:
        view = _snapshot(e)
        old = self.r.servers.get(view.name)
        if old is not None:  # a restart of its process: the state is the stored one, work in flight goes on
            view.installing, view.failed, view.initial = old.installing, old.failed, old.initial
        else:
            view.initial = (view.replication, view.in_rotation)
        self.r.servers[view.name] = view
        self._db(view.database)

    def _restart(self, e: JournalEvent, s: ServerView) -> None:
        s.started_at = e.ts

    def _install(self, e: JournalEvent, s: ServerView) -> None:
        if e.outcome != "ok" or e.detail.get("noop"):
            return
        to = str(e.detail.get("to"))
        frm = str(e.detail.get("from") or s.version)
        db = self._db(s.database)
        on = sorted(o.name for o in self.r.servers.values()
                    if o.role != "None" and o.group in self._groups_touching(s) and o.replication)
        if on:
            self._bad(e, "replication-enabled", f"installed {to} while replication was on at {', '.join(on)}")
        if s.load_balanced:
            serving = sorted(n for n in self.top.pool_of(s.name)
                             if n in self.r.servers and self.r.servers[n].in_rotation)
            if serving:
                self._bad(e, "pool-in-rotation", f"installed {to} while {', '.join(serving)} of its pool"
                                                 " was in rotation")
        jump = self._jump(frm, to)
        if jump is None or jump > 2:
            self._bad(e, "version-jump", f"installed {frm} -> {to} ({jump} releases)")
        if db.lock is not None and db.lock != s.name:
            self._bad(e, "schema-locked", f"installed {to} while {db.lock} held the schema lock of {db.name}")
        if self._behind(db.schema, to):
            holders = sorted(o.name for o in self.r.servers.values() if o.name != s.name
                             and o.database == s.database and to in (o.version, o.installing))
            if holders:
                self._bad(e, "database-first", f"installed {to} while {db.name} was at {db.schema} and"
                                               f" {', '.join(holders)} already had or was installing it")
        elif db.schema is not None and self._behind(to, db.schema):
            db.schema = None  # a downgrade: a rollback, whose restore of the database the journal cannot see
        # A rollback's reinstall is a downgrade, not a repeat.
        if self._behind(frm, to) and self.r.installs.get((s.name, to)):
            self._bad(e, "install-twice", f"{to} installed again after an install of it had succeeded")
        s.installing, s.failed = to, None

    def _installed(self, e: JournalEvent, s: ServerView) -> None:
        to = str(e.detail.get("to") or s.installing)
        s.installing = None
        if e.outcome == "ok":
            s.version, s.started_at = to, e.ts
            self.r.installs[(s.name, to)] = self.r.installs.get((s.name, to), 0) + 1
        else:
            s.failed = to

    def _replication(self, e: JournalEvent, s: ServerView) -> None:
        enabled = bool(e.detail.get("enabled"))
        if enabled and not s.replication:
            locked = sorted({f"{d.name} (by {d.lock})" for o in self.r.servers.values()
                             if o.role != "None" and o.group == s.group
                             for d in [self._db(o.database)] if d.lock})
            if locked:
                self._bad(e, "replication-during-migration", f"replication switched on while {', '.join(locked)}"
                                                             " was locked for a schema migration")
        s.replication = enabled

    def _rotation(self, e: JournalEvent, s: ServerView) -> None:
        wanted = bool(e.detail.get("inRotation"))
        if wanted and not s.in_rotation:
            db = self._db(s.database)
            why = []
            if e.ts + CLOCK_SLACK < s.started_at + self.top.settle_seconds:
                why.append(f"{e.ts - s.started_at:.2f}s after its start, before the {self.top.settle_seconds:g}s"
                           " the status page needs to confirm")
            if s.installing:
                why.append(f"while installing {s.installing}")
            if s.failed:
                why.append(f"after its install of {s.failed} failed")
            if db.lock:
                why.append(f"while {db.lock} held the schema lock of {db.name}")
            if db.schema is not None and db.schema != s.version:
                why.append(f"at {s.version} while {db.name} is at {db.schema}")
            if why:
                self._bad(e, "rotation-before-confirmed", "back into rotation " + "; ".join(why))
        s.in_rotation = wanted

    def _migrate(self, e: JournalEvent, s: ServerView) -> None:
        if e.outcome != "ok":
            return
        db = self._db(s.database)
        to, frm = str(e.detail.get("to")), e.detail.get("from")
        jump = self._jump(frm, to)
        if jump is None or jump > 2:
            self._bad(e, "version-jump", f"schema of {db.name} migrated {frm} -> {to} ({jump} releases)")
        if s.version != to:
            self._bad(e, "migration-order", f"migrated {db.name} to {to} while running {s.version}")
        busy = sorted(o.name for o in self.r.servers.values() if o.database == s.database and o.installing)
        if busy:
            self._bad(e, "migration-order", f"migrated {db.name} while {', '.join(busy)} was installing")
        on = sorted(o.name for o in self.r.servers.values()
                    if o.role != "None" and o.group in self._groups_touching(s) and o.replication)
        if on:
            self._bad(e, "replication-enabled", f"migrated {db.name} while replication was on at {', '.join(on)}")
        if self.top.backups_required:
            good = [b for b in self.backups if b.database == db.name and b.verified
                    and db.changed_at - CLOCK_SLACK <= b.taken_at <= e.ts + CLOCK_SLACK
                    and (b.schema_version is None or b.schema_version == frm)]
            if not good:
                self._bad(e, "backup-before-migration", f"{db.name} migrated {frm} -> {to} with no verified backup"
                                                        " taken since its schema last changed")
        db.lock = s.name

    def _migrated(self, e: JournalEvent, s: ServerView) -> None:
        db = self._db(s.database)
        db.lock = None
        to = str(e.detail.get("to"))
        if e.outcome == "ok":
            db.schema, db.changed_at = to, e.ts
            n = self.r.migrations.get((db.name, to), 0) + 1
            self.r.migrations[(db.name, to)] = n
            if n > 1:
                self._bad(e, "migration-twice", f"{db.name} migrated to {to} {n} times")
        else:  # half migrated: the data may be damaged; its schema is whatever the steps left
            applied = e.detail.get("applied") or []
            db.schema, db.changed_at = (str(applied[-1]) if applied else e.detail.get("from")), e.ts

    # ------------------------------------------------------------ clients (strategy CleanInstall)
    def _clients(self, e: JournalEvent) -> None:
        doc = e.detail["clients"]
        lost = _unreached(doc, self.r.servers)
        for client, why in sorted(lost.items()):
            if client not in self.r.cut_off:
                self._bad(e, "clients-cut-off", f"{client} reaches no online server: {why}")
        self.r.cut_off = set(lost)
        self.r.clients = doc


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _unreached(doc: Mapping[str, Any], servers: Mapping[str, ServerView]) -> dict[str, str]:
    """Every client of the client document that reaches no online server, and why (written anew here, not
    shared with the simulators' or the operator's client model). A client holds a server, a virtual host
    (DNS record to a server answering for it) or a host name, which reaches that host's default website."""
    online = doc.get("online") or {}
    sites = doc.get("websites") or {}

    def up(name: str | None) -> bool:
        return bool(name) and name in servers and bool(online.get(name, True))

    def default_of(host: str | None) -> str | None:
        site = sites.get(host) if host else None
        return site.get("defaultWebsite") if isinstance(site, Mapping) else None

    lost: dict[str, str] = {}
    agent, agent_host = doc.get("deploymentAgent"), doc.get("deploymentAgentHost")
    if agent is not None or agent_host is not None:
        direct = agent if agent is not None else default_of(agent_host)
        held = agent if agent is not None else f"http://{agent_host} (default website {direct})"
        if not up(direct) and not any(up(n) for n in doc.get("failoverServers") or ()):
            lost["the Deployment Agent"] = f"{held} is not online and no server of the Failover Server List is"
    vhosts = doc.get("virtualHosts") or {}
    for i, entry in enumerate(doc.get("policy") or ()):
        if "server" in entry:
            if not up(entry["server"]):
                lost[f"policy entry {i + 1}"] = f"{entry['server']} is not online"
            continue
        if "defaultWebsite" in entry:
            host = entry["defaultWebsite"]
            if not up(default_of(host)):
                lost[f"policy entry {i + 1}"] = f"the default website of {host} is {default_of(host)}, not online"
            continue
        host = entry.get("virtualHost")
        target = (doc.get("dnsRecords") or {}).get(host)
        if not up(target) or host not in (vhosts.get(target) or ()):
            lost[f"policy entry {i + 1}"] = f"{host} resolves to {target}, which does not serve it online"
    return lost


def replay(events: Iterable[JournalEvent], topology: Topology, backups: Iterable[Backup] = ()) -> Replay:
    auditor = Auditor(topology, backups)
    for e in sorted(events, key=lambda e: e.seq):
        auditor.feed(e)
    return auditor.r


def audit(events: Iterable[JournalEvent], topology: Topology, backups: Iterable[Backup] = (), *,
          expect: Mapping[str, Expect] | None = None, data_before: Mapping[str, str] | None = None,
          data_after: Mapping[str, str] | None = None) -> list[Finding]:
    """Every finding of the run: broken rules from the journal, then what the end state gets wrong."""
    result = replay(events, topology, backups)
    findings = list(result.findings)
    for name, want in sorted((expect or {}).items()):
        s = result.servers.get(name)
        if s is None:
            findings.append(Finding("not-restored", "never registered in the journal", server=name))
            continue
        wrong = []
        if want.version is not None and s.version != want.version:
            wrong.append(f"runs {s.version}, not {want.version}")
        if s.installing is not None:
            wrong.append(f"still installing {s.installing}")
        if want.replication is not None and s.replication != want.replication:
            wrong.append(f"replication {_on(s.replication)}, it was {_on(want.replication)}")
        if want.in_rotation is not None and s.in_rotation != want.in_rotation:
            wrong.append(f"{'in' if s.in_rotation else 'out of'} rotation, it was"
                         f" {'in' if want.in_rotation else 'out of'}")
        if wrong:
            findings.append(Finding("not-restored", "; ".join(wrong), server=name))
    if data_before is not None and data_after is not None:
        for db in sorted(set(data_before) | set(data_after)):
            if data_before.get(db) != data_after.get(db):
                findings.append(Finding("data-changed", f"user data of {db} was {data_before.get(db)} and is"
                                                        f" {data_after.get(db)}", data_loss=True))
    return findings


def as_before(result: Replay, servers: Sequence[str], version: str | None) -> dict[str, Expect]:
    """The usual expectation: each server at `version`, replication and rotation as they first were."""
    found = {}
    for name in servers:
        s = result.servers.get(name)
        initial = s.initial if s is not None else (None, None)
        found[name] = Expect(version, initial[0], initial[1])
    return found
