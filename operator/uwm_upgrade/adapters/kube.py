"""The operator's calls to the Kubernetes API: Secrets, status patches, Events, the other plans, Leases.

kopf watches and dispatches; these are the writes and reads the reconciler makes itself, through the
official client. The client blocks, so every call runs in a thread pool of this adapter's own (a few
workers: a slow backup or a slow database in another pool never delays a status write), carries a
`_request_timeout` (connect, read) that the API client applies to every request it sends, and is awaited
with a deadline. Whatever the client or urllib3 raises becomes a `KubeError` that says whether a retry
can help; a 409 on a write is a `ConflictError` (someone else wrote first: re-read before acting).

Secret values are returned to the caller only, never logged, and only from Secrets labelled for plans; a
missing Secret or key is an error that names the Secret and key but not any value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "upgrade.uwm.io", "v1alpha1", "upgradeplans"
COMPONENT = "uwm-upgrade-operator"
FIELD_MANAGER = COMPONENT  # in managedFields: who wrote the status (and Events, Leases)
PLAN_SECRET_LABEL = "upgrade.uwm.io/plan-secret"  # a Secret a plan may use carries it with the value "true"
T = TypeVar("T")
CONNECT_SECONDS, READ_SECONDS = 5.0, 15.0
WORKERS = 4
EVENT_WORKERS = 2
MAX_API_MESSAGE = 300


class KubeError(RuntimeError):
    """A Kubernetes API call failed; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class UnusableSecretError(KubeError):
    """A plan's Secret exists but may not or cannot be used (unlabelled, no such key, not text). The
    message names the Secret and the key, never a value nor the keys the Secret has. Waiting may help:
    the Secret's owner can label or fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class ConflictError(KubeError):
    """A write was refused with 409: the object changed since it was read (or another writer holds it)."""


def load_config() -> None:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class TimedApiClient(client.ApiClient):
    """An ApiClient that gives every request a `_request_timeout` unless the caller gave one."""

    request_timeout: tuple[float, float] = (CONNECT_SECONDS, READ_SECONDS)

    def call_api(self, method: Any, url: Any, header_params: Any = None, body: Any = None,
                 post_params: Any = None, _request_timeout: Any = None) -> Any:
        return super().call_api(method, url, header_params, body, post_params,
                                _request_timeout=_request_timeout or self.request_timeout)


@dataclass(frozen=True)
class LeaseRecord:
    """A coordination.k8s.io/v1 Lease as the leader election reads it."""

    holder: str | None
    duration_seconds: int | None
    renew_time: dt.datetime | None
    transitions: int
    resource_version: str | None


def _api_message(exc: ApiException) -> str:
    """The API server's own sentence (a 422 names the field), cut short; '' when it sent none."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:MAX_API_MESSAGE] if message else ""


class Kube:
    """Thin typed wrapper over the client APIs the operator uses."""

    def __init__(self, api_client: client.ApiClient | None = None, workers: int = WORKERS,
                 connect_seconds: float = CONNECT_SECONDS, read_seconds: float = READ_SECONDS) -> None:
        if api_client is None:
            api_client = TimedApiClient()
        if isinstance(api_client, TimedApiClient):
            api_client.request_timeout = (connect_seconds, read_seconds)
        self._api = api_client
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)
        self._events = client.EventsV1Api(self._api)
        self._leases = client.CoordinationV1Api(self._api)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        # Events on threads of their own: posting them never delays a status write
        self._event_pool = ThreadPoolExecutor(max_workers=EVENT_WORKERS, thread_name_prefix="kube-events")
        # urllib3 may retry a request that failed to connect or to read; past two attempts, the caller stops
        # waiting (the worker thread ends when urllib3 gives up, bounded by the same timeouts).
        self.deadline = 2 * (connect_seconds + read_seconds) + 5.0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._event_pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, what: str, fn: Callable[[], T], pool: ThreadPoolExecutor | None = None) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool or self._pool, fn), self.deadline)
        except ApiException as exc:
            status = exc.status or 0
            transient = status in (0, 408, 409, 429) or status >= 500
            detail = _api_message(exc)
            message = f"{what}: {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
            kind = ConflictError if status == 409 else KubeError
            raise kind(message, transient, exc.status) from None
        except TimeoutError:
            raise KubeError(f"{what}: no answer within {self.deadline:.0f} s", transient=True) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, TLS, MaxRetryError, timeouts
            raise KubeError(f"{what}: the API server is unreachable ({type(exc).__name__})", transient=True) from None
        except (ValueError, TypeError) as exc:  # an answer the client could not read (not JSON, wrong shape)
            raise KubeError(f"{what}: an answer the client could not read ({type(exc).__name__})",
                            transient=True) from None

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        """The text under `key` of a Secret labelled `upgrade.uwm.io/plan-secret: "true"`.

        The label is the owner's consent: the operator may `get` every Secret of a namespace it watches,
        but a plan (which anyone allowed to create plans writes) may use only the Secrets labelled for
        plans. An unlabelled Secret is refused before anything of it is used, and nothing of it is said
        but its name; a missing key is named alone (never the keys the Secret has).
        """
        try:
            secret = await self._call(f"reading Secret {namespace}/{name}",
                                      lambda: self._core.read_namespaced_secret(name, namespace))
        except KubeError as exc:
            if exc.status == 404:
                raise KubeError(f"Secret {namespace}/{name} does not exist", transient=True, status=404) from None
            raise
        labels = getattr(secret.metadata, "labels", None) or {}
        if labels.get(PLAN_SECRET_LABEL) != "true":
            raise UnusableSecretError(
                f"Secret {namespace}/{name} is not labelled {PLAN_SECRET_LABEL}=\"true\": a plan may use only"
                f" Secrets labelled for plans (kubectl label secret -n {namespace} {name} {PLAN_SECRET_LABEL}=true)")
        data = secret.data or {}
        if key not in data:
            raise UnusableSecretError(f"Secret {namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise UnusableSecretError(f"Secret {namespace}/{name} key {key!r} is not UTF-8 text") from None

    async def list_plans(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            res = await self._call("listing UpgradePlans", lambda: self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL))
        else:
            res = await self._call("listing UpgradePlans", lambda: self._custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL))
        return list(_as_dict(res).get("items", []))

    async def get_plan(self, namespace: str, name: str) -> dict[str, Any]:
        """The plan as the API server has it now (status and resourceVersion included)."""
        custom = self._custom
        res = await self._call(f"reading UpgradePlan {namespace}/{name}",
                               lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        return _as_dict(res)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any]:
        """A JSON merge patch of the status subresource. With ``resource_version`` the API server applies
        it only to that version of the plan, else answers 409 (`ConflictError`): status writes are fenced."""
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        res = await self._call(
            f"patching the status of UpgradePlan {namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json"))
        return _as_dict(res)

    async def patch_status_ops(self, namespace: str, name: str, ops: list[dict[str, Any]],
                               resource_version: str | None = None) -> dict[str, Any]:
        """A JSON patch (RFC 6902) of the status subresource: only the list items that changed are sent
        (a merge patch replaces a list whole). With ``resource_version`` it is applied only to that version
        of the plan, else 409 (`ConflictError`), as `patch_status`: the patch sets the resourceVersion the
        API server must find (its optimistic concurrency)."""
        body = list(ops)
        if resource_version:
            body.insert(0, {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
        res = await self._call(
            f"patching the status of UpgradePlan {namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, field_manager=FIELD_MANAGER,
                _content_type="application/json-patch+json"))
        return _as_dict(res)

    async def event(self, plan: dict[str, Any], type_: str, reason: str, note: str) -> None:
        """An events.k8s.io/v1 Event about ``plan`` (best effort: an Event lost is not an upgrade lost)."""
        meta = plan["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(name=f"{meta['name']}.{uuid.uuid4().hex[:12]}", namespace=meta["namespace"]),
            event_time=now, reporting_controller=f"upgrade.uwm.io/{COMPONENT}",
            reporting_instance=os.environ.get("HOSTNAME", COMPONENT)[:128], action=reason, reason=reason,
            type=type_, note=note[:1024],
            regarding=client.V1ObjectReference(api_version=f"{GROUP}/{VERSION}", kind="UpgradePlan",
                                               name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid")),
        )
        with contextlib.suppress(KubeError):
            await self._call("posting an Event", lambda: self._events.create_namespaced_event(
                meta["namespace"], body, field_manager=FIELD_MANAGER), self._event_pool)

    # ------------------------------------------------------------ Leases (engine/leader.py)

    async def read_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        """The Lease, or None when there is none."""
        try:
            lease = await self._call(f"reading Lease {namespace}/{name}",
                                     lambda: self._leases.read_namespaced_lease(name, namespace))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        spec = lease.spec
        return LeaseRecord(
            holder=spec.holder_identity if spec else None,
            duration_seconds=spec.lease_duration_seconds if spec else None,
            renew_time=spec.renew_time if spec else None,
            transitions=(spec.lease_transitions or 0) if spec else 0,
            resource_version=lease.metadata.resource_version if lease.metadata else None)

    async def write_lease(self, namespace: str, name: str, holder: str, duration_seconds: int, transitions: int,
                          acquired: dt.datetime, resource_version: str | None) -> str | None:
        """Create the Lease (``resource_version`` None) or replace exactly that version of it; returns the new
        resourceVersion. Someone else's write in between is a `ConflictError` (409), as is a create of a
        Lease that exists."""
        now = dt.datetime.now(dt.UTC)
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, resource_version=resource_version),
            spec=client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=duration_seconds,
                                    renew_time=now, acquire_time=acquired, lease_transitions=transitions))
        if resource_version is None:
            done = await self._call(f"creating Lease {namespace}/{name}",
                                    lambda: self._leases.create_namespaced_lease(
                                        namespace, lease, field_manager=FIELD_MANAGER))
        else:
            done = await self._call(f"renewing Lease {namespace}/{name}",
                                    lambda: self._leases.replace_namespaced_lease(
                                        name, namespace, lease, field_manager=FIELD_MANAGER))
        return done.metadata.resource_version if done.metadata else None


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise KubeError(f"unexpected answer from the API server: {type(obj).__name__}", transient=True)
    return obj
