"""The TLS side of the calls to the servers: which CA bundle to trust and which client certificate to show.

A plan's `spec.tls` names (labelled) Secrets: `caBundleSecretRef` (PEM certificates the servers' chains
must end in; without it the system's trust store is used) and `clientCertificateSecretRef` (a
`kubernetes.io/tls` Secret, `tls.crt` and `tls.key`, for servers that want mutual TLS). The material is
held in memory by `TlsMaterial` (whose repr shows none of it) and turned into one `ssl.SSLContext` per
server client. Python's `ssl` loads a client key only from a file, so the certificate and key are written
to a private temporary folder (mode 0700, files 0600) for the moment of loading and removed at once.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path


class TlsError(ValueError):
    """The TLS material of a plan is unusable; the message names the spec field, never the material."""


@dataclass(frozen=True, repr=False)
class TlsMaterial:
    """PEM text from the plan's Secrets: the CA bundle and/or a client certificate with its key."""

    ca_bundle: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None

    def __repr__(self) -> str:
        parts = [name for name, value in (("ca_bundle", self.ca_bundle), ("client_certificate",
                                          self.client_certificate)) if value]
        return f"TlsMaterial({', '.join(parts) or 'nothing'}; contents hidden)"

    def fingerprint(self) -> str:
        """A digest of the material, to tell one plan's TLS settings from another's (never shown)."""
        joined = "\0".join(v or "" for v in (self.ca_bundle, self.client_certificate, self.client_key))
        return hashlib.sha256(joined.encode()).hexdigest()


def ssl_context(material: TlsMaterial | None) -> ssl.SSLContext:
    """A verifying client context: certificates and host names are always checked."""
    context = ssl.create_default_context()
    if material is None:
        return context
    if material.ca_bundle:
        try:
            context.load_verify_locations(cadata=material.ca_bundle)
        except (ssl.SSLError, ValueError):
            raise TlsError("spec.tls.caBundleSecretRef: the Secret's value is not a PEM certificate bundle") from None
    if material.client_certificate or material.client_key:
        if not (material.client_certificate and material.client_key):
            raise TlsError("spec.tls.clientCertificateSecretRef: the Secret needs both tls.crt and tls.key")
        _load_client_certificate(context, material.client_certificate, material.client_key)
    return context


def _load_client_certificate(context: ssl.SSLContext, certificate: str, key: str) -> None:
    with tempfile.TemporaryDirectory(prefix="uwm-tls-") as folder:
        os.chmod(folder, 0o700)
        cert_file, key_file = Path(folder) / "tls.crt", Path(folder) / "tls.key"
        for path, text in ((cert_file, certificate), (key_file, key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except (ssl.SSLError, ValueError, OSError):
            raise TlsError("spec.tls.clientCertificateSecretRef: tls.crt and tls.key are not a PEM certificate"
                           " and its unencrypted private key") from None
