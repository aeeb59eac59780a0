"""A plan's credentials, read from its Secrets: the agent token, the databases' connection strings, TLS;
and, apart, the licenses a clean install deploys with the Deployment Agent (a license that cannot be read
holds up only the step that sends it, never observing the estate or a plan's teardown).

One place reads them so that every value is taken the same way: only from Secrets labelled for plans
(`Kube.secret_value` refuses the others), with a trailing line break stripped from the token and the
connection strings (what `kubectl create secret --from-file` leaves when the file ends with one), and
anything else unusable (a token an HTTP header cannot carry, a control character in a connection
string, a CA bundle that is no PEM) refused with a message that names the Secret, the key and the spec
field, never the value. The values are held behind a repr that shows none of them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from ..adapters.kube import KubeError, UnusableSecretError
from ..adapters.odbc import ConnectionStringError, target
from ..adapters.servers import token_problem
from ..adapters.tls import TlsError, TlsMaterial, ssl_context
from ..core.models import SecretKeyRef, UpgradePlanSpec

SecretReader = Callable[[str, str, str], Awaitable[str]]
TLS_CERT_KEY, TLS_KEY_KEY = "tls.crt", "tls.key"
MAX_LICENSE_BYTES = 64 * 1024


def license_fingerprint(text: str) -> str:
    """What status and Events say of a license instead of its content: `sha256:` and the first 16 hex
    digits of the SHA-256 of its UTF-8 bytes (docs/contracts.md section 2b)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, repr=False)
class PlanCredentials:
    token: str
    connection_strings: Mapping[str, str]
    tls: TlsMaterial | None = None

    def __repr__(self) -> str:
        return (f"PlanCredentials(databases={sorted(self.connection_strings)}, tls={self.tls!r}; "
                "token and connection strings hidden)")

    def database_targets(self) -> dict[str, str]:
        """Per database, the SERVER/PORT/DATABASE its connection string names (no password), as the one
        connection-string parser reads them (adapters/odbc.py); an unreadable string is `unreadable`."""
        found = {}
        for name, connection_string in self.connection_strings.items():
            try:
                t = target(connection_string)
            except ConnectionStringError:
                found[name] = "unreadable"
                continue
            found[name] = ";".join(f"{k}={v}" for k, v in (("SERVER", t.host), ("PORT", t.port),
                                                             ("DATABASE", t.database)) if v)
        return found

    def client_key(self) -> str:
        """A digest of what tells one HTTP client from another: the token and the TLS material."""
        material = f"{self.token}\0{self.tls.fingerprint() if self.tls else ''}"
        return hashlib.sha256(material.encode()).hexdigest()


def single_line(value: str, where: str) -> str:
    """`value` without trailing line breaks; refused (naming `where`) when a control character remains."""
    text = value.rstrip("\r\n")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise UnusableSecretError(f"{where} holds a line break or another control character inside its value")
    return text


def _where(namespace: str, ref: SecretKeyRef, field: str) -> str:
    return f"Secret {namespace}/{ref.name} key {ref.key!r} ({field})"


async def read_credentials(read: SecretReader, namespace: str, spec: UpgradePlanSpec) -> PlanCredentials:
    """Every credential the plan names, or `UnusableSecretError`/`KubeError` saying which Secret is why."""
    agent = spec.agent_secret_ref
    refs = [agent, *(db.connection_secret_ref for db in spec.databases)]
    # read at once; a failure is raised in the order of the spec (the token's first), as one by one
    values = await asyncio.gather(*(read(namespace, r.name, r.key) for r in refs), return_exceptions=True)
    for value in values:
        if isinstance(value, BaseException):
            raise value
    texts = [str(v) for v in values]
    where = _where(namespace, agent, "spec.agentSecretRef")
    token = single_line(texts[0], where)
    problem = token_problem(token)
    if problem:
        raise UnusableSecretError(f"{where}: the token {problem}")
    databases = {}
    for i, (db, text) in enumerate(zip(spec.databases, texts[1:], strict=True)):
        field = f"spec.databases[{i}].connectionSecretRef"
        databases[db.name] = single_line(text, _where(namespace, db.connection_secret_ref, field))
    return PlanCredentials(token, databases, await _tls(read, namespace, spec))


@dataclass(frozen=True, repr=False)
class PlanLicenses:
    """Per new Management Server with a `replacement.license`: its text, or why it could not be read."""

    texts: Mapping[str, str] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"PlanLicenses(read={sorted(self.texts)}, problems={sorted(self.problems)}; texts hidden)"


async def read_licenses(read: SecretReader, namespace: str, spec: UpgradePlanSpec) -> PlanLicenses:
    """Each Management replacement's license, as its (labelled) Secret holds it (sent as it is: it is
    content, not a line); one that is empty or larger than 64 KiB, or cannot be read, is a problem naming
    the Secret and the spec field, never its value."""
    texts, problems = {}, {}
    for i, entry in enumerate(spec.management_servers):
        ref = entry.replacement.license if entry.replacement is not None else None
        if ref is None:
            continue
        name = next(r.new.name for r in spec.replacements() if r.old.name == entry.name)
        where = _where(namespace, ref, f"spec.managementServers[{i}].replacement.license")
        try:
            text = await read(namespace, ref.name, ref.key)
        except KubeError as exc:
            problems[name] = f"{where}: {exc}"
            continue
        size = len(text.encode("utf-8"))
        if not text.strip() or size > MAX_LICENSE_BYTES:
            problems[name] = f"{where}: a license must be text of 1 to {MAX_LICENSE_BYTES} bytes, it has {size}"
            continue
        texts[name] = text
    return PlanLicenses(texts, problems)


async def _tls(read: SecretReader, namespace: str, spec: UpgradePlanSpec) -> TlsMaterial | None:
    if spec.tls is None:
        return None
    ca = cert = key = None
    ca_ref, client_ref = spec.tls.ca_bundle_secret_ref, spec.tls.client_certificate_secret_ref
    if ca_ref is not None:
        ca = await read(namespace, ca_ref.name, ca_ref.key)
    if client_ref is not None:
        cert = await read(namespace, client_ref.name, TLS_CERT_KEY)
        key = await read(namespace, client_ref.name, TLS_KEY_KEY)
    material = TlsMaterial(ca, cert, key)
    try:
        ssl_context(material)  # refuse unusable material here, naming the Secret, not at the first call
    except TlsError as exc:
        names = ", ".join(f"Secret {namespace}/{r.name}" for r in (ca_ref, client_ref) if r is not None)
        raise UnusableSecretError(f"{exc} ({names})") from None
    return material
