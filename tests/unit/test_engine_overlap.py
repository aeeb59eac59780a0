"""Overlap between plans by what they reach, not how they spell it: one server by its address or its name,
one database through two Secrets, plans in two namespaces of a cluster-wide operator."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from core_builders import SMALL_ESTATE

from uwm_upgrade.adapters.kube import KubeError
from uwm_upgrade.engine.overlap import Resolver, Scope, competing_plans, database_target, host_port

PG = "DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;DATABASE=uwm_mgmt;UID=u;PWD=p"


@pytest.mark.parametrize(("connection", "target"), [
    (PG, ("127.0.0.1", "5432", "uwm_mgmt")),
    ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:SQL01.corp,1433;Database=UWM_Management;Uid=u;Pwd=p",
     ("sql01.corp", "1433", "uwm_management")),
    ("DRIVER={FreeTDS};SERVER=sql01.corp;PORT=14330;DATABASE=uwm;UID=sa;PWD={p;w}", ("sql01.corp", "14330", "uwm")),
    ("Driver={ODBC Driver 18 for SQL Server};Server=sql01\\UWM;Initial Catalog=Mgmt;Pwd=x",
     ("sql01", "instance uwm", "mgmt")),
    ("Driver={ODBC Driver 18 for SQL Server};Server=(local);Database=uwm", ("localhost", "1433", "uwm")),
    ("DRIVER={x};UID=u;PWD=p", None),
])
def test_the_server_and_database_of_a_connection_string(connection: str, target: tuple[str, str, str] | None) -> None:
    assert database_target(connection) == target


def test_a_url_without_a_port_has_its_schemes_port() -> None:
    assert host_port("https://MS-1.corp/") == ("ms-1.corp", 443)
    assert host_port("http://10.0.0.5:7751") == ("10.0.0.5", 7751)


async def test_a_name_and_its_address_are_one_host() -> None:
    names = await Resolver().names("localhost")
    assert "127.0.0.1" in names and "localhost" in names
    assert await Resolver().names("::ffff:127.0.0.1") == frozenset({"127.0.0.1"})
    assert await Resolver(timeout=0.5).names("no-such-host.invalid") == frozenset({"no-such-host.invalid"})


class Plans:
    """list_plans and the Secrets of the plans of a small cluster."""

    def __init__(self, plans: list[dict[str, Any]], secrets: dict[tuple[str, str, str], str]) -> None:
        self.plans, self.secrets, self.listed = plans, secrets, []  # type: ignore[var-annotated]

    async def list_plans(self, namespace: str | None = None) -> list[dict[str, Any]]:
        self.listed.append(namespace)
        return [p for p in self.plans if namespace is None or p["metadata"]["namespace"] == namespace]

    async def secret(self, namespace: str, name: str, key: str) -> str:
        if (namespace, name, key) not in self.secrets:
            raise KubeError(f"Secret {namespace}/{name} does not exist", transient=True, status=404)
        return self.secrets[(namespace, name, key)]


def plan(name: str, namespace: str, created: str, phase: str | None = None, *, servers: list[str],
         secret: str = "dbs") -> dict[str, Any]:
    spec = copy.deepcopy(SMALL_ESTATE)
    for server, url in zip(spec["managementServers"] + spec["personalizationServers"], servers, strict=True):
        server["url"] = url
    for db in spec["databases"]:
        db["connectionSecretRef"]["name"] = secret
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"{namespace}-{name}",
                         "creationTimestamp": created}, "spec": spec, "status": {"phase": phase} if phase else {}}


MINE = ["http://localhost:7751", "http://localhost:7752", "http://localhost:7771", "http://localhost:7772"]
OTHERS = ["http://127.0.0.1:8751", "http://127.0.0.1:8752", "http://127.0.0.1:8771", "http://127.0.0.1:8772"]


def secrets(namespace: str, secret: str, database: str) -> dict[tuple[str, str, str], str]:
    return {(namespace, secret, key): PG.replace("uwm_mgmt", f"{database}_{key}") for key in ("m", "p")}


async def held(me: dict[str, Any], cluster: Plans, scope: Scope) -> tuple[str, ...]:
    from uwm_upgrade.core.models import parse_spec

    return await competing_plans(cluster, me, parse_spec(me["spec"]), scope, cluster.secret,  # type: ignore[arg-type]
                                 Resolver())


async def test_the_same_server_by_address_and_by_name_is_an_overlap() -> None:
    running = plan("a", "ns", "2026-01-01", "Running", servers=[OTHERS[0].replace("8751", "7751"), *OTHERS[1:]])
    me = plan("b", "ns", "2026-01-02", servers=MINE, secret="mine")
    cluster = Plans([running, me], {**secrets("ns", "dbs", "a"), **secrets("ns", "mine", "b")})
    assert await held(me, cluster, Scope()) == ("a",)  # 127.0.0.1:7751 is localhost:7751


async def test_one_database_through_two_secrets_is_an_overlap() -> None:
    running = plan("a", "ns", "2026-01-01", "Running", servers=OTHERS)
    me = plan("b", "ns", "2026-01-02", servers=MINE, secret="mine")
    cluster = Plans([running, me], {**secrets("ns", "dbs", "same"), **secrets("ns", "mine", "same")})
    assert await held(me, cluster, Scope()) == ("a",)
    apart = Plans([running, me], {**secrets("ns", "dbs", "a"), **secrets("ns", "mine", "b")})
    assert await held(me, apart, Scope()) == ()


async def test_a_cluster_wide_operator_compares_every_namespace() -> None:
    running = plan("a", "team-a", "2026-01-01", "Running", servers=MINE)
    me = plan("a", "team-b", "2026-01-02", servers=MINE, secret="mine")  # the same name, another namespace
    cluster = Plans([running, me], {**secrets("team-a", "dbs", "a"), **secrets("team-b", "mine", "b")})
    assert await held(me, cluster, Scope(cluster_wide=True)) == ("team-a/a",)
    assert cluster.listed == [None]
    namespaced = Plans([running, me], cluster.secrets)
    assert await held(me, namespaced, Scope(namespaces=("team-b",))) == ()  # it may not list team-a
    assert namespaced.listed == ["team-b"]


async def test_an_unreadable_secret_still_counts_by_its_name() -> None:
    running = plan("a", "ns", "2026-01-01", "Running", servers=OTHERS)
    me = plan("b", "ns", "2026-01-02", servers=MINE)  # the same Secret name and keys, unreadable
    assert await held(me, Plans([running, me], {}), Scope()) == ("a",)


async def test_the_plans_come_from_the_operator_s_index_without_listing_them() -> None:
    """kopf's index (what `handlers.upgradeplans` keeps, `overlap.indexed` of each plan) stands in for a
    list of every plan each turn: the same overlap is found, and nothing is listed."""
    from uwm_upgrade.core.models import parse_spec
    from uwm_upgrade.engine.overlap import indexed

    running = plan("a", "ns", "2026-01-01", "Running", servers=[OTHERS[0].replace("8751", "7751"), *OTHERS[1:]])
    me = plan("b", "ns", "2026-01-02", servers=MINE, secret="mine")
    cluster = Plans([running, me], {**secrets("ns", "dbs", "a"), **secrets("ns", "mine", "b")})
    index = {("ns", p["metadata"]["name"]): [indexed(p)] for p in (running, me)}
    found = await competing_plans(cluster, me, parse_spec(me["spec"]), Scope(), cluster.secret,  # type: ignore[arg-type]
                                  Resolver(), index)
    assert found == ("a",) and cluster.listed == []
    assert indexed(running)["status"] == {"phase": "Running"}  # what the index keeps of a status: its phase
