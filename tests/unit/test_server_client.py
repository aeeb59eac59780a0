"""The servers' HTTP client against real local listeners (plain and TLS): within the server policy, no
reflection of what a server answers, no token in any message, no exception escaping on garbage."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from tls_support import Authority, Pem

from uwm_upgrade.adapters.server_policy import PolicyRule, ServerPolicy
from uwm_upgrade.adapters.servers import MAX_ANSWER_BYTES, ServerClient, ServerError
from uwm_upgrade.adapters.tls import TlsError, TlsMaterial, ssl_context

TOKEN = "tok-{p;a s=s}-Zq"
LOCAL_HTTP = ServerPolicy(allow_insecure_http=True)
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Listener:
    """A local HTTP(S) server answering every request with `answer`; `seen` records what reached it."""

    answer: Answer
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        return await self.answer(request)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Listener]]]:
    runners: list[web.AppRunner] = []

    async def start(answer: Answer, tls: ssl.SSLContext | None = None) -> Listener:
        listener = Listener(answer)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", listener.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]
        listener.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return listener

    yield start
    for runner in runners:
        await runner.cleanup()


def answering(status: int, body: bytes | str, content_type: str = "application/json") -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        text = body.replace("{auth}", auth).replace("{token}", auth.removeprefix("Bearer ")) \
            if isinstance(body, str) else body
        data = text.encode() if isinstance(text, str) else text
        return web.Response(status=status, body=data, content_type=content_type)
    return answer


async def refused(client: ServerClient, url: str) -> ServerError:
    try:
        await client.state("ms-1", url)
    except ServerError as exc:
        return exc
    raise AssertionError("the call did not fail")


REFLECTED = '{"error": "no: {auth} {token} <script>\\u0007 x' + "y" * 5000 + '", "rule": "busy"}'


@pytest.mark.parametrize(("status", "body", "expected"), [
    (401, "{auth}", "the agent rejected the token (401): check agentSecretRef"),
    (500, "<html>Internal error for {auth}: stack trace ...</html>", "GET /agent/v1/state answered 500"),
    (500, REFLECTED, "GET /agent/v1/state answered 500: no: Bearer *** *** x"),  # markup and control chars gone
    (409, REFLECTED, "refused (busy): no: Bearer *** *** x"),
    (409, '{"error": "nope", "rule": "Not a rule id; {auth}"}', "refused (conflict): nope"),
    (200, b"\xff\xfe\x00garbage{auth}", "GET /agent/v1/state answered 200 with something that is not JSON"),
    (200, '{"name": "ms-1", "kind": "{auth}"}', "unexpected state answer: kind: Input should be"),
    (302, "{auth}", "GET /agent/v1/state answered 302, a redirect, which the operator does not follow"),
    (404, "[1, 2, {auth}]", "GET /agent/v1/state answered 404"),
])
async def test_an_answer_is_never_reflected(serve: Callable[..., Awaitable[Listener]], status: int, body: str,
                                            expected: str) -> None:
    listener = await serve(answering(status, body))
    client = ServerClient(TOKEN, LOCAL_HTTP)
    try:
        error = await refused(client, listener.url)
    finally:
        await client.close()
    message = str(error)
    assert message.startswith(f"server ms-1: {expected}"), message
    assert TOKEN not in message and "a s=s" not in message and "Internal error" not in message
    assert len(message) < 400 and message.isprintable()
    assert listener.seen and listener.seen[0][2]["Authorization"] == f"Bearer {TOKEN}"


async def test_a_redirect_is_not_followed(serve: Callable[..., Awaitable[Listener]]) -> None:
    elsewhere = await serve(answering(200, "{}"))

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(elsewhere.url + "/steal")

    first = await serve(redirect)
    client = ServerClient(TOKEN, LOCAL_HTTP)
    try:
        error = await refused(client, first.url)
    finally:
        await client.close()
    assert error.status == 302 and elsewhere.seen == []


async def test_an_answer_too_large_is_refused_unread(serve: Callable[..., Awaitable[Listener]]) -> None:
    listener = await serve(answering(200, b'{"name": "' + b"x" * (2 * MAX_ANSWER_BYTES) + b'"}'))
    client = ServerClient(TOKEN, LOCAL_HTTP)
    try:
        error = await refused(client, listener.url)
    finally:
        await client.close()
    assert f"more than {MAX_ANSWER_BYTES} bytes" in str(error)


async def test_a_portal_answer_of_the_wrong_shape_is_a_server_error(serve: Callable[..., Awaitable[Listener]]) -> None:
    listener = await serve(answering(200, '{"updatesRequired": "all of them {auth}"}'))
    client = ServerClient(TOKEN, LOCAL_HTTP)
    try:
        with pytest.raises(ServerError, match="unexpected portal answer: updatesRequired") as info:
            await client.portal_status("ms-1", listener.url)
    finally:
        await client.close()
    assert TOKEN not in str(info.value) and "all of them" not in str(info.value)
    assert "Authorization" not in listener.seen[0][2]  # the portal is called without the token


async def test_a_garbage_status_page_is_a_printable_failure(serve: Callable[..., Awaitable[Listener]]) -> None:
    listener = await serve(answering(503, b"<title>\x1b[2J\xff\xfe down \x00 </title>", "text/html"))
    client = ServerClient(TOKEN, LOCAL_HTTP)
    try:
        page = await client.status_page("ms-1", listener.url, "Management")
    finally:
        await client.close()
    assert (page.ok, page.http_status) == (False, 503)
    assert page.summary.isprintable() and "down" in page.summary


# ---------------------------------------------------------------- the policy: refused before any call


@pytest.mark.parametrize(("policy", "url_of", "expected"), [
    (ServerPolicy(), lambda url: url, PolicyRule.HTTPS_REQUIRED),  # plain http, and the call carries the token
    (ServerPolicy.parse(["*.uwm.corp.example"], allow_insecure_http=True), lambda url: url,
     PolicyRule.HOST_NOT_ALLOWED),
    (ServerPolicy.parse([], ["10.0.0.0/8"], allow_insecure_http=True),
     lambda url: url.replace("127.0.0.1", "localhost"), PolicyRule.ADDRESS_NOT_ALLOWED),  # checked when resolved
    (LOCAL_HTTP, lambda url: url.replace("://", "://uwm:pw@"), PolicyRule.URL_SHAPE),
])
async def test_a_server_outside_the_policy_is_never_called(serve: Callable[..., Awaitable[Listener]],
                                                          policy: ServerPolicy, url_of: Callable[[str], str],
                                                          expected: PolicyRule) -> None:
    listener = await serve(answering(200, "{}"))
    client = ServerClient(TOKEN, policy)
    try:
        error = await refused(client, url_of(listener.url))
        page = await client.status_page("ms-1", url_of(listener.url), "Management")
    finally:
        await client.close()
    assert error.policy is expected and not error.transient
    assert f"refused by the operator's server policy ({expected})" in str(error)
    if expected is not PolicyRule.HTTPS_REQUIRED:  # the status page carries no token: https is not required
        assert not page.ok and "server policy" in page.summary
    assert listener.seen == [] if expected is not PolicyRule.HTTPS_REQUIRED else \
        all("Authorization" not in headers for _, _, headers in listener.seen)


@pytest.mark.parametrize("token", ["s3c\nr3t", "s3cr3t\n", " s3cr3t", "s3cr3t-ünï", "\x00", ""])
def test_a_token_no_header_can_carry_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ValueError, match=r"^the agent token ") as info:
        ServerClient(token)
    assert "s3c" not in str(info.value)


def test_the_client_and_its_tls_material_never_show_what_they_hold() -> None:
    material = TlsMaterial("CA-PEM-TEXT", "CERT-PEM-TEXT", "KEY-PEM-TEXT")
    assert "PEM-TEXT" not in repr(material) and "PEM-TEXT" not in str(material)
    assert TOKEN not in repr(ServerClient(TOKEN))


# ---------------------------------------------------------------- TLS: a local HTTPS listener, a throwaway CA


def server_context(pem: Pem, authority: Authority | None = None) -> ssl.SSLContext:
    """The listener's context; with `authority`, clients must show a certificate it signed."""
    import tempfile
    from pathlib import Path

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder) / "c.pem", Path(folder) / "k.pem"
        cert.write_text(pem.certificate)
        key.write_text(pem.key)
        context.load_cert_chain(str(cert), str(key))
    if authority is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=authority.pem)
    return context


STATE = ('{"name": "ms-1", "kind": "Management", "version": "2023.1", "phase": "Running",'
         ' "database": {"name": "mgmt-db"}}')


async def test_tls_with_the_plans_ca_bundle(serve: Callable[..., Awaitable[Listener]]) -> None:
    authority = Authority()
    listener = await serve(answering(200, STATE), server_context(authority.server()))
    trusting = ServerClient(TOKEN, ServerPolicy(), TlsMaterial(ca_bundle=authority.pem))
    strangers = ServerClient(TOKEN, ServerPolicy(), TlsMaterial(ca_bundle=Authority("another CA").pem))
    system = ServerClient(TOKEN, ServerPolicy())
    try:
        assert (await trusting.state("ms-1", listener.url)).version == "2023.1"
        for client in (strangers, system):
            error = await refused(client, listener.url)
            assert "TLS certificate is not trusted" in str(error) and "spec.tls.caBundleSecretRef" in str(error)
    finally:
        for client in (trusting, strangers, system):
            await client.close()
    assert len(listener.seen) == 1  # the untrusted server never got the request (nor the token)


async def test_tls_with_a_client_certificate(serve: Callable[..., Awaitable[Listener]]) -> None:
    authority = Authority()
    listener = await serve(answering(200, STATE), server_context(authority.server(), authority))
    mine = authority.client()
    with_cert = ServerClient(TOKEN, ServerPolicy(), TlsMaterial(authority.pem, mine.certificate, mine.key))
    without = ServerClient(TOKEN, ServerPolicy(), TlsMaterial(authority.pem))
    try:
        assert (await with_cert.state("ms-1", listener.url)).name == "ms-1"
        error = await refused(without, listener.url)
        assert error.transient and "did not answer" in str(error)
    finally:
        await with_cert.close()
        await without.close()
    assert len(listener.seen) == 1


@pytest.mark.parametrize(("material", "field"), [
    (TlsMaterial(ca_bundle="not a certificate"), "spec.tls.caBundleSecretRef"),
    (TlsMaterial(client_certificate="x"), "spec.tls.clientCertificateSecretRef"),
    (TlsMaterial(client_certificate="not pem", client_key="not pem"), "spec.tls.clientCertificateSecretRef"),
])
def test_unusable_tls_material_names_the_field_not_the_material(material: TlsMaterial, field: str) -> None:
    with pytest.raises(TlsError, match=field) as info:
        ssl_context(material)
    assert "not pem" not in str(info.value) and "not a certificate" not in str(info.value)
