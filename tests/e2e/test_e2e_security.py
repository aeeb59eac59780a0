"""End to end, as an attacker and as a careful owner would see it: a plan may use only Secrets labelled for
plans (an unlabelled Secret's values never leave the operator, nor its key names), and no secret value
reaches the plan's status, the Events, the operator's log or its metrics, whatever the error path and
however hostile the values — against the real API server, PostgreSQL, simulators, local listeners of the
test's own and the real operator process.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from uwm_dev.testbed import estate

from e2e.e2e_support import E2E, PERS_FLEET, PERS_PLAN, operator_log

pytestmark = pytest.mark.e2e

LABEL = "upgrade.uwm.io/plan-secret"
Behaviour = Callable[[str], tuple[int, bytes]]  # the request's Authorization header -> (status, body)


@dataclass
class Listener:
    """A local HTTP server of the test's own, standing for a server a plan names (or an attacker's):
    it records every request (method, path, headers, body) and answers as `behaviour` says."""

    behaviour: Behaviour
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self) -> str:
        """Everything that reached it, as one text to search."""
        return "\n".join(f"{m} {p} {json.dumps(h)} {b.decode(errors='replace')}" for m, p, h, b in self.seen)


@pytest.fixture
def listen() -> Iterator[Callable[[Behaviour], Listener]]:
    started: list[Listener] = []

    def start(behaviour: Behaviour) -> Listener:
        listener = Listener(behaviour)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.seen.append((self.command, self.path, dict(self.headers), body))
                status, answer = listener.behaviour(self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_DELETE = _answer  # noqa: N815 (http.server's naming)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        listener.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=listener.server.serve_forever, daemon=True).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        assert listener.server is not None
        listener.server.shutdown()
        listener.server.server_close()


def echo_500(auth: str) -> tuple[int, bytes]:
    """A server that reflects the request's credentials in a 500 answer of the contract's shape."""
    return 500, json.dumps({"error": f"internal error; you sent {auth}", "trace": auth * 3}).encode()


def garbage(auth: str) -> tuple[int, bytes]:
    return 200, b"\xff\xfe\x00<html>" + auth.encode() + b"\x1b[2J"


def nothing(auth: str) -> tuple[int, bytes]:
    return 404, b"{}"


def secret(name: str, data: dict[str, str], labelled: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labelled:
        meta["labels"] = {LABEL: "true"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": data}


def plan(name: str, url: str, agent: tuple[str, str], db: tuple[str, str]) -> dict[str, Any]:
    """A one-server, one-database plan (its own server URL and Secret keys: it overlaps no other plan)."""
    return {"apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan", "metadata": {"name": name},
            "spec": {"targetVersion": "2023.1", "releases": ["2021.1", "2022.1", "2023.1"],
                     "databases": [{"name": "pers-db", "kind": "Personalization",
                                    "connectionSecretRef": {"name": db[0], "key": db[1]}}],
                     "personalizationServers": [{"name": "ps-1", "url": url, "database": "pers-db"}],
                     "agentSecretRef": {"name": agent[0], "key": agent[1]},
                     "healthCheck": {"timeoutSeconds": 60, "periodSeconds": 1}}}


def message(e2e: E2E, name: str) -> str:
    return str((e2e.plan(name).get("status") or {}).get("message") or "")


def wait_message(e2e: E2E, name: str, *parts: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while not all(p in (text := message(e2e, name)) for p in parts):
        assert time.monotonic() < deadline, f"plan {name}: {parts} not in its message in {timeout:.0f} s: {text!r}"
        time.sleep(0.3)
    return text


def turns(e2e: E2E) -> int:
    return operator_log(e2e).count("decided: ")


def wait_turns(e2e: E2E, more: int, timeout: float = 60.0) -> None:
    """Until the operator has taken `more` further turns (it looked again, and again)."""
    start, deadline = turns(e2e), time.monotonic() + timeout
    while turns(e2e) < start + more:
        assert time.monotonic() < deadline, f"the operator took no {more} more turns in {timeout:.0f} s"
        time.sleep(0.2)


# ---------------------------------------------------------------- acceptance: an unlabelled Secret


def test_an_unlabelled_secret_never_leaves_the_operator(e2e: E2E,
                                                        listen: Callable[[Behaviour], Listener]) -> None:
    """The confused deputy, tried: a plan names a namespace Secret nobody labelled for plans, and points
    its server at a listener of the attacker's. The listener receives nothing; the plan's status and the
    namespace's Events hold none of the Secret's values nor its key names; labelling it is the consent."""
    e2e.start_operator()
    ns = e2e.namespace
    values = {"aws-secret-access-key": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
              "db-admin": "DRIVER={PostgreSQL Unicode};SERVER=10.9.9.9;UID=sa;PWD=Adm1n-S3cret",
              "kubeconfig-token": "eyJhbGciOiJSUzI1NiJ9.victim-service-account"}
    attacker = listen(echo_500)
    victim = secret("victim", values, labelled=False)
    estate.apply(e2e.bed, [{**victim, "metadata": {**victim["metadata"], "namespace": ns}}])
    doc = plan("confused-deputy", attacker.url, ("victim", "aws-secret-access-key"), ("victim", "db-admin"))
    doc["metadata"]["namespace"] = ns
    estate.apply(e2e.bed, [doc])

    text = wait_message(e2e, "confused-deputy", f'Secret {ns}/victim is not labelled {LABEL}="true"')
    assert f"kubectl label secret -n {ns} victim {LABEL}=true" in text
    wait_turns(e2e, 3)  # the operator looked again, several times, and still used nothing
    status = json.dumps(e2e.plan("confused-deputy").get("status") or {})
    events = e2e.kubectl("get", "events", "-n", ns, "-o", "json")
    secret_parts = (*values.values(), "wJalrXUtnFEMI", "Adm1n-S3cret", "kubeconfig-token")  # a key no plan names
    for where, found in (("the plan's status", status), ("the namespace's Events", events),
                         ("the operator's log", operator_log(e2e))):
        # the key names the plan itself names may be in the log (the plan's spec is), never in status or Events
        for value in (*secret_parts, *(values if where != "the operator's log" else ())):
            assert value not in found, f"{value!r} appears in {where}"
    assert attacker.seen == [], f"the listener was called: {attacker.received()[:500]}"
    assert (e2e.plan("confused-deputy").get("status") or {}).get("phase") in ("Pending", "Planning")

    # The owner's consent: labelled, the Secret is used (its value goes to the plan's server, as asked).
    e2e.kubectl("label", "secret", "victim", "-n", ns, f"{LABEL}=true")
    deadline = time.monotonic() + 60
    while not attacker.seen:
        assert time.monotonic() < deadline, "the labelled Secret was never used"
        time.sleep(0.2)
    assert f"Bearer {values['aws-secret-access-key']}" in attacker.received()
    text = wait_message(e2e, "confused-deputy", "answered 500")
    # only the contract's short `error` field is kept, the token masked; nothing else the server sent
    assert values["aws-secret-access-key"] not in text and "trace" not in text and "you sent Bearer ***" in text


# ---------------------------------------------------------------- the leak test: every error path, hostile values


@dataclass(frozen=True)
class Hostile:
    """A token and a database password, and the fragments of them no output may contain."""

    token: str
    password: str  # as written in the connection string
    fragments: tuple[str, ...]


HOSTILE = {
    "braces": Hostile("t{p;a s=s}k", "{p;a s=s}}x}", ("t{p;a s=s}k", "p;a s=s", "a s=s")),
    "two-characters": Hostile("Qz", "Zq", ("Qz", "Zq")),
    "unicode": Hostile("tök€n-Ωmega", "pä$$wörd-Ωmega", ("tök€n", "pä$$wörd", "Ωmega")),
    "newline": Hostile("nl-Xq7\nnl-Yw3", "pw-Kd8\npw-Lm2", ("nl-Xq7", "nl-Yw3", "pw-Kd8", "pw-Lm2")),
}


@pytest.mark.parametrize("hostile", list(HOSTILE.values()), ids=list(HOSTILE))
def test_no_secret_reaches_status_events_logs_or_metrics(e2e: E2E, listen: Callable[[Behaviour], Listener],
                                                         hostile: Hostile) -> None:
    """Wrong database credentials, an unreachable database, an agent that answers 401, 500 (echoing the
    token) or garbage, a token no header can carry, a binary Secret value: each a plan of its own, all at
    once, with hostile values; then the plans' status, the namespace's Events (the operator's and kopf's
    own), the operator's whole log (debug included) and /metrics are searched for every fragment."""
    e2e.start_operator()
    fleet = e2e.start_fleet(PERS_FLEET)
    ns = e2e.namespace
    pg = e2e.bed.odbc("uwm")

    def unreachable(database: str) -> str:
        return (f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT=1;DATABASE={database};UID=uwm;"
                f"PWD={hostile.password}")

    # Every plan its own server (a listener) and its own database (key and target): no plan overlaps another.
    connection_strings = {
        "wrong-role": pg.replace("UID=uwm", "UID=nobody_here") + f";PWD={hostile.password}",
        "wrong-role-2": pg.replace("UID=uwm", "UID=nobody_here").replace("DATABASE=uwm", "DATABASE=uwm_other")
        + f";PWD={hostile.password}",
        "unreachable": unreachable("x"), "unreachable-2": unreachable("y"), "unreachable-3": unreachable("z"),
        "fleet-db": fleet.odbc["pers-db"] + f";PWD={hostile.password}",
    }
    secrets = secret("hostile", {"token": hostile.token, **connection_strings})
    binary = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "binary", "labels": {LABEL: "true"}},
              "type": "Opaque", "data": {"token": "//4AYmluYXJ5"}}  # b"\xff\xfe\x00binary"
    behaviours = {"wrong-credentials": nothing, "unreachable-db": nothing, "agent-500": echo_500,
                  "agent-garbage": garbage, "binary-token": nothing}
    listeners = {name: listen(behaviour) for name, behaviour in behaviours.items()}
    fleet_ps1 = estate.plan_documents(PERS_PLAN, fleet, ns)[-1]["spec"]["personalizationServers"][0]["url"]
    token = ("hostile", "token")
    plans = {
        "wrong-credentials": plan("wrong-credentials", listeners["wrong-credentials"].url, token,
                                  ("hostile", "wrong-role")),
        "unreachable-db": plan("unreachable-db", listeners["unreachable-db"].url, token, ("hostile", "unreachable")),
        "agent-401": plan("agent-401", fleet_ps1, token, ("hostile", "fleet-db")),
        "agent-500": plan("agent-500", listeners["agent-500"].url, token, ("hostile", "wrong-role-2")),
        "agent-garbage": plan("agent-garbage", listeners["agent-garbage"].url, token, ("hostile", "unreachable-2")),
        "binary-token": plan("binary-token", listeners["binary-token"].url, ("binary", "token"),
                             ("hostile", "unreachable-3")),
    }
    docs = [secrets, binary, *plans.values()]
    for doc in docs:
        doc["metadata"]["namespace"] = ns
    estate.apply(e2e.bed, docs)

    sendable = "\n" not in hostile.token and hostile.token.isascii()
    expect = {"binary-token": ["is not UTF-8 text"]}
    if sendable:
        expect |= {"wrong-credentials": ["database pers-db", "does not exist"], "unreachable-db": ["database pers-db"],
                   "agent-401": ["rejected the token (401)"], "agent-500": ["answered 500: internal error"],
                   "agent-garbage": ["not JSON"]}
    else:  # refused before any call: no header could carry it
        why = "line break" if "\n" in hostile.token else "cannot carry"
        expect |= {name: ["spec.agentSecretRef", why] for name in plans if name != "binary-token"}
    for name, parts in expect.items():
        wait_message(e2e, name, *parts)
    wait_turns(e2e, 6)
    assert e2e.operator is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{e2e.operator.metrics_port}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    places = {f"the status of {name}": json.dumps(e2e.plan(name).get("status") or {}, ensure_ascii=False)
              for name in plans}
    places |= {"the Events": e2e.kubectl("get", "events", "-n", ns, "-o", "json"),
               "the operator's log": operator_log(e2e), "/metrics": metrics}
    leaks = [(fragment, where) for where, text in places.items() for fragment in hostile.fragments
             if fragment in text or json.dumps(fragment)[1:-1] in text]
    assert leaks == [], leaks
    assert "Traceback" not in operator_log(e2e), "an exception escaped (see the operator's log)"
    if sendable:  # the plan's own servers got the token (they are the plan's), and echoed it back in vain
        assert f"Bearer {hostile.token}" in listeners["agent-500"].received()
    else:
        assert all(not listener.seen for listener in listeners.values())


# ---------------------------------------------------------------- the server policy, at preflight


def test_a_server_outside_the_policy_is_refused_before_any_call(e2e: E2E,
                                                                listen: Callable[[Behaviour], Listener]) -> None:
    """An operator that allows only *.uwm.corp.example over https: a plan at plain http, and one at an
    address no pattern allows, wait naming the server and the rule; neither listener is ever called (not
    for the agent, not for the status page, not for the portal)."""
    e2e.operator = estate.start_operator(e2e.bed, [e2e.namespace], e2e.work, insecure_http=False,
                                         extra=["--allow-server-host", "*.uwm.corp.example"])
    ns = e2e.namespace
    plain, elsewhere = listen(echo_500), listen(echo_500)
    docs = [secret("agent", {"token": "t0ken-of-the-plan"}),
            secret("dbs", {k: f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT=1;DATABASE={k}" for k in "ab"}),
            plan("plain-http", plain.url, ("agent", "token"), ("dbs", "a")),
            plan("elsewhere", elsewhere.url.replace("http://", "https://"), ("agent", "token"), ("dbs", "b"))]
    for doc in docs:
        doc["metadata"]["namespace"] = ns
    estate.apply(e2e.bed, docs)
    text = wait_message(e2e, "plain-http", "server ps-1: refused by the operator's server policy (https-required)")
    assert "--allow-insecure-http" in text
    text = wait_message(e2e, "elsewhere", "server ps-1: refused by the operator's server policy (host-not-allowed)",
                        "127.0.0.1 is outside the allowed hosts and CIDRs (*.uwm.corp.example)")
    assert "*.uwm.corp.example" in text
    wait_turns(e2e, 4)
    assert plain.seen == [] and elsewhere.seen == []
    assert "server policy: hosts *.uwm.corp.example; CIDRs -; plain http refused" in operator_log(e2e)
