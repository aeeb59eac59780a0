"""A plan uses only Secrets labelled for plans, and says what is wrong with one without showing any of it:
`Kube.secret_value` (against a stand-in for the API's Secret reads) and the credentials the loop reads."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tls_support import Authority

from uwm_upgrade.adapters.kube import PLAN_SECRET_LABEL, Kube, KubeError, UnusableSecretError
from uwm_upgrade.core.models import parse_spec
from uwm_upgrade.engine.credentials import PlanCredentials, read_credentials
from uwm_upgrade.engine.reconciler import Runtime

LABELLED = {PLAN_SECRET_LABEL: "true"}
VALUES = {"token": "tok-{p;a s=s}", "aws-access-key": "AKIAIOSFODNN7EXAMPLE", "mgmt": "PWD={p;a s=s};SERVER=db"}


class Secrets:
    """Answers `read_namespaced_secret` from a dict of Secrets: (labels, {key: bytes})."""

    def __init__(self, secrets: dict[str, tuple[dict[str, str], dict[str, bytes]]]) -> None:
        self.secrets = secrets

    def read_namespaced_secret(self, name: str, namespace: str) -> client.V1Secret:
        if name not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        labels, data = self.secrets[name]
        return client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or None),
                               data={k: base64.b64encode(v).decode() for k, v in data.items()})


def kube(secrets: dict[str, tuple[dict[str, str], dict[str, bytes]]]) -> Kube:
    k = Kube(api_client=client.ApiClient())
    k._core = Secrets(secrets)  # type: ignore[assignment]
    return k


def encoded(values: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode() for k, v in values.items()}


async def test_a_labelled_secret_is_read() -> None:
    assert await kube({"s": (LABELLED, encoded(VALUES))}).secret_value("ns", "s", "token") == VALUES["token"]


@pytest.mark.parametrize("labels", [{}, {PLAN_SECRET_LABEL: "false"}, {PLAN_SECRET_LABEL: "True"},
                                    {"upgrade.uwm.io/plan-secrets": "true"}])
async def test_an_unlabelled_secret_is_refused_naming_it_and_the_label_only(labels: dict[str, str]) -> None:
    for key in ("token", "no-such-key"):  # whether the key exists is not said either
        with pytest.raises(UnusableSecretError) as info:
            await kube({"victim": (labels, encoded(VALUES))}).secret_value("ns", "victim", key)
        message = str(info.value)
        assert message.startswith(f'Secret ns/victim is not labelled {PLAN_SECRET_LABEL}="true"'), message
        assert f"kubectl label secret -n ns victim {PLAN_SECRET_LABEL}=true" in message
        for leaked in (*VALUES, *VALUES.values(), "no-such-key"):
            assert leaked not in message, leaked


async def test_a_missing_key_is_named_alone() -> None:
    with pytest.raises(UnusableSecretError) as info:
        await kube({"s": (LABELLED, encoded(VALUES))}).secret_value("ns", "s", "pers")
    assert str(info.value) == "Secret ns/s has no key 'pers'"
    assert info.value.transient  # the owner may add it


async def test_a_missing_secret_and_a_binary_value() -> None:
    with pytest.raises(KubeError, match=r"^Secret ns/absent does not exist$"):
        await kube({}).secret_value("ns", "absent", "token")
    with pytest.raises(UnusableSecretError, match=r"^Secret ns/s key 'token' is not UTF-8 text$"):
        await kube({"s": (LABELLED, {"token": b"\xff\xfe\x00binary"})}).secret_value("ns", "s", "token")


# ---------------------------------------------------------------- the credentials a plan's loop reads

SPEC = {
    "targetVersion": "2023.1", "releases": ["2021.1", "2022.1", "2023.1"], "agentSecretRef": {"name": "agent"},
    "databases": [{"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "mgmt"}}],
    "managementServers": [{"name": "ms-1", "url": "https://ms-1:7751", "database": "mgmt-db"}],
}


def runtime(secrets: dict[str, tuple[dict[str, str], dict[str, bytes]]]) -> Runtime:
    return Runtime(kube(secrets))


async def credentials(secrets: dict[str, tuple[dict[str, str], dict[str, bytes]]],
                      **spec: Any) -> PlanCredentials:
    return await read_credentials(runtime(secrets).secret, "ns", parse_spec({**SPEC, **spec}))


DBS = (LABELLED, {"mgmt": b"DRIVER={PostgreSQL Unicode};Server = DB01 ;Port=5432;DATABASE={uwm;mgmt};PWD={p;a s=s}\n"})


async def test_a_trailing_line_break_is_stripped_from_the_token_and_the_connection_strings() -> None:
    """What `kubectl create secret --from-file` leaves when the file ends with a line break."""
    got = await credentials({"agent": (LABELLED, {"token": b"s3cr3t-t0ken\r\n"}), "dbs": DBS})
    assert got.token == "s3cr3t-t0ken"
    assert got.connection_strings["mgmt-db"].endswith("PWD={p;a s=s}")
    assert got.database_targets() == {"mgmt-db": "SERVER=db01;PORT=5432;DATABASE=uwm;mgmt"}
    assert "s3cr3t" not in repr(got) and "a s=s" not in repr(got)


@pytest.mark.parametrize(("token", "why"), [
    (b"s3c\nr3t", "holds a line break or another control character inside its value"),
    (b"s3cr3t-\xc3\xbcn\xc3\xaf", "has characters an HTTP header cannot carry"),
    (b" s3cr3t", "starts or ends with white space"),
    (b"\n", "is empty"),
])
async def test_a_token_that_cannot_be_sent_is_refused_naming_the_secret(token: bytes, why: str) -> None:
    with pytest.raises(UnusableSecretError) as info:
        await credentials({"agent": (LABELLED, {"token": token}), "dbs": DBS})
    message = str(info.value)
    assert message.startswith("Secret ns/agent key 'token' (spec.agentSecretRef)") and why in message, message
    assert "s3c" not in message


async def test_a_control_character_inside_a_connection_string_is_refused() -> None:
    with pytest.raises(UnusableSecretError, match=r"Secret ns/dbs key 'mgmt' \(spec.databases\[0\]"
                                                  r".connectionSecretRef\) holds a line break") as info:
        await credentials({"agent": (LABELLED, {"token": b"t0ken"}),
                           "dbs": (LABELLED, {"mgmt": b"SERVER=db;\nPWD=s3cr3t"})})
    assert "s3cr3t" not in str(info.value)


async def test_tls_material_comes_from_labelled_secrets_and_is_checked_when_read() -> None:
    authority = Authority()
    mine = authority.client()
    base = {"agent": (LABELLED, {"token": b"t0ken"}), "dbs": DBS}
    tls = {"caBundleSecretRef": {"name": "uwm-ca"}, "clientCertificateSecretRef": {"name": "uwm-client"}}
    good = {**base, "uwm-ca": (LABELLED, {"ca.crt": authority.pem.encode()}),
            "uwm-client": (LABELLED, {"tls.crt": mine.certificate.encode(), "tls.key": mine.key.encode()})}
    got = await credentials(good, tls=tls)
    assert got.tls is not None and got.tls.ca_bundle == authority.pem and "BEGIN" not in repr(got)
    with pytest.raises(UnusableSecretError, match=r"^Secret ns/uwm-ca is not labelled"):
        await credentials({**good, "uwm-ca": ({}, {"ca.crt": authority.pem.encode()})}, tls=tls)
    with pytest.raises(UnusableSecretError, match=r"^spec.tls.caBundleSecretRef: .* \(Secret ns/uwm-ca, "
                                                  r"Secret ns/uwm-client\)$"):
        await credentials({**good, "uwm-ca": (LABELLED, {"ca.crt": b"garbage"})}, tls=tls)


def test_the_runtime_shows_neither_cached_values_nor_clients() -> None:
    rt = Runtime(kube({}))
    rt.secrets[("ns", "agent", "token")] = (0.0, "s3cr3t-t0ken")
    rt.client(PlanCredentials("s3cr3t-t0ken", {"mgmt-db": "PWD=s3cr3t"}))
    assert "s3cr3t" not in repr(rt) and "s3cr3t" not in str(rt)
    assert list(rt.clients) != ["s3cr3t-t0ken"] and len(rt.clients) == 1


@pytest.mark.parametrize(("connection_string", "expected"), [
    ("DRIVER={PostgreSQL Unicode};SERVER=127.0.0.1;PORT=5432;DATABASE=uwm_mgmt;UID=uwm;PWD=uwm-testbed",
     "SERVER=127.0.0.1;PORT=5432;DATABASE=uwm_mgmt"),
    ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:SQL01.corp,1433;Database=UWM_Management;Pwd={a;}}b}",
     "SERVER=sql01.corp;PORT=1433;DATABASE=UWM_Management"),
    ("Data Source = sql02 ; Initial Catalog = {uwm}}pers} ; Password = x9", "SERVER=sql02;DATABASE=uwm}pers"),
])
def test_the_database_target_of_a_connection_string_never_holds_its_password(connection_string: str,
                                                                           expected: str) -> None:
    from uwm_upgrade.engine.credentials import PlanCredentials

    assert PlanCredentials("t0ken", {"db": connection_string}).database_targets() == {"db": expected}
