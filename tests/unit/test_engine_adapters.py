"""The adapters map their libraries' errors to the project's own, so the loop never meets a raw one.

Kubernetes: urllib3's MaxRetryError (not an OSError), ApiExceptions (409 as ConflictError; 422 with the
API server's sentence), an answer that is not an object, a call that never returns. The servers' HTTP
client, against a real local aiohttp server: a non-UTF-8 answer, an answer of the wrong shape, and a
token aiohttp refuses to send (a trailing newline, as `kubectl create secret --from-file` leaves one).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import urllib3
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from uwm_upgrade.adapters.kube import ConflictError, Kube, KubeError
from uwm_upgrade.adapters.server_policy import ServerPolicy
from uwm_upgrade.adapters.servers import ServerClient, ServerError

LOOPBACK = ServerPolicy(allow_insecure_http=True)  # the test's listeners speak plain http


def raising(exc: BaseException) -> Callable[[], Any]:
    """Stands in for a Kubernetes client call that raises `exc`."""
    def call() -> Any:
        raise exc
    return call


def kube() -> Kube:
    return Kube(api_client=object(), workers=2)  # type: ignore[arg-type]  # _call never uses it here


def api_exception(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


CALLS: dict[str, tuple[Callable[[], Any], type[KubeError], bool, str]] = {
    "unreachable": (raising(urllib3.exceptions.MaxRetryError(None, "/apis", "refused")),  # type: ignore[arg-type]
                    KubeError, True, "unreachable (MaxRetryError)"),
    "conflict": (raising(api_exception(409, "Conflict", "the object has been modified")),
                 ConflictError, True, "409 Conflict: the object has been modified"),
    "invalid": (raising(api_exception(422, "Unprocessable Entity", 'status.phase: Unsupported value: "Exploded"')),
                KubeError, False, "422 Unprocessable Entity: status.phase: Unsupported value"),
    "server-error": (raising(api_exception(503, "Service Unavailable", "")), KubeError, True,
                     "503 Service Unavailable"),
    "unreadable": (raising(ValueError("Expecting value: line 1 column 1")), KubeError, True,
                   "could not read (ValueError)"),
}


@pytest.mark.parametrize("case", list(CALLS))
async def test_kubernetes_errors_become_kube_errors(case: str) -> None:
    fn, kind, transient, text = CALLS[case]
    adapter = kube()
    with pytest.raises(kind) as raised:
        await adapter._call("patching the status", fn)
    assert raised.value.transient is transient and text in str(raised.value), str(raised.value)
    adapter.close()


async def test_a_garbage_answer_is_a_kube_error() -> None:
    adapter = kube()
    with pytest.raises(KubeError, match="unexpected answer from the API server: str"):
        adapter._custom.list_namespaced_custom_object = lambda *a, **k: "<html>proxy error</html>"  # type: ignore[method-assign]
        await adapter.list_plans("ns")
    adapter.close()


async def test_a_call_that_never_returns_is_cut_off_at_the_deadline() -> None:
    adapter = kube()
    adapter.deadline = 0.2
    release = threading.Event()
    with pytest.raises(KubeError, match=r"no answer within 0 s") as raised:
        await adapter._call("listing UpgradePlans", lambda: release.wait(10))
    assert raised.value.transient
    release.set()
    adapter.close()


async def test_kubernetes_calls_have_a_pool_of_their_own() -> None:
    """A default pool saturated by slow blocking work (a backup) does not delay a Kubernetes call."""
    adapter = kube()
    loop = asyncio.get_running_loop()
    release = threading.Event()
    hogs = [loop.run_in_executor(None, release.wait, 10) for _ in range(64)]
    try:
        answer = await asyncio.wait_for(adapter._call("reading", lambda: "fast"), 2)
        assert answer == "fast"
    finally:
        release.set()
        await asyncio.gather(*hogs)
        adapter.close()


def test_every_request_carries_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ApiClient gives `_request_timeout` to every request that has none (Secrets, Leases included)."""
    from kubernetes import client

    from uwm_upgrade.adapters.kube import TimedApiClient

    seen: list[Any] = []
    monkeypatch.setattr(client.ApiClient, "call_api", lambda self, *a, _request_timeout=None, **k: seen.append(
        _request_timeout))
    api = TimedApiClient()
    api.request_timeout = (1.0, 2.0)
    api.call_api("GET", "https://x/api")
    api.call_api("GET", "https://x/api", _request_timeout=7)
    assert seen == [(1.0, 2.0), 7]


# ---------------------------------------------------------------- the servers' HTTP client


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A local HTTP server whose answers a test sets: answers[path] = (status, body bytes)."""
    answers: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.Response:
        status, body = answers[request.path]
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


async def test_a_non_utf8_answer_is_a_server_error(server: tuple[str, dict[str, Any]]) -> None:
    url, answers = server
    answers["/agent/v1/state"] = (200, b"\xff\xfe\x00garbage")
    client = ServerClient("token", LOOPBACK)
    with pytest.raises(ServerError, match="not JSON") as raised:
        await client.state("ms-1", url)
    assert raised.value.transient
    answers["/ManagementServer/deployment/status.aspx"] = (200, b"<p id=\"result\">\xff ok</p>")
    page = await client.status_page("ms-1", url, "Management")  # read, not raised on
    assert page.ok and "ok" in page.summary
    await client.close()


async def test_a_portal_answer_of_the_wrong_shape_is_a_server_error(server: tuple[str, dict[str, Any]]) -> None:
    url, answers = server
    answers["/ServerConfigurationPortal/DatabaseUpdates"] = (200, json.dumps({"updatesRequired": "all"}).encode())
    client = ServerClient("token", LOOPBACK)
    with pytest.raises(ServerError, match="unexpected portal answer"):
        await client.portal_status("ms-1", url)
    await client.close()


def test_a_token_with_a_trailing_newline_is_named_without_showing_it() -> None:
    """The credentials strip a trailing line break (engine/credentials.py); a client is never made with one."""
    with pytest.raises(ValueError, match="line break") as raised:
        ServerClient("s3cr3t-token\n", LOOPBACK)
    assert "s3cr3t" not in str(raised.value)
