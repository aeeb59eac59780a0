"""The operator's calls to the Kubernetes API: Secrets, status patches, Events and the other plans.

kopf watches and dispatches; these are the writes and reads the reconciler makes itself, through the
official client, each in a worker thread so the event loop never blocks. Secret values are returned to
the caller only, never logged, and a missing Secret or key is an error that names the Secret and key
but not any value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "upgrade.uwm.io", "v1alpha1", "upgradeplans"
COMPONENT = "uwm-upgrade-operator"
T = TypeVar("T")


class KubeError(RuntimeError):
    """A Kubernetes API call failed; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def load_config() -> None:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class Kube:
    """Thin typed wrapper over the client APIs the operator uses."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api = api_client or client.ApiClient()
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)
        self._events = client.EventsV1Api(self._api)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except ApiException as exc:
            transient = exc.status in (None, 0, 408, 409, 429) or (exc.status or 0) >= 500
            raise KubeError(f"{what}: {exc.status} {exc.reason}", transient, exc.status) from None
        except OSError as exc:  # connection refused, TLS errors, timeouts
            raise KubeError(f"{what}: {type(exc).__name__}", transient=True) from None

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = await self._call(f"reading Secret {namespace}/{name}",
                                      lambda: self._core.read_namespaced_secret(name, namespace))
        except KubeError as exc:
            if exc.status == 404:
                raise KubeError(f"Secret {namespace}/{name} does not exist", transient=True, status=404) from None
            raise
        data = secret.data or {}
        if key not in data:
            have = ", ".join(sorted(data)) or "no keys"
            raise KubeError(f"Secret {namespace}/{name} has no key {key!r} (it has: {have})", transient=True)
        return base64.b64decode(data[key]).decode()

    async def get_plan(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self._call(f"reading UpgradePlan {namespace}/{name}",
                                   lambda: self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                     PLURAL, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return _as_dict(obj)

    async def list_plans(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            res = await self._call("listing UpgradePlans", lambda: self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL))
        else:
            res = await self._call("listing UpgradePlans", lambda: self._custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL))
        return list(_as_dict(res).get("items", []))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the status subresource."""
        body = {"status": patch}
        res = await self._call(
            f"patching the status of UpgradePlan {namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json"))
        return _as_dict(res)

    async def patch_metadata(self, namespace: str, name: str, metadata: dict[str, Any]) -> None:
        await self._call(f"patching UpgradePlan {namespace}/{name}",
                         lambda: self._custom.patch_namespaced_custom_object(
                             GROUP, VERSION, namespace, PLURAL, name, {"metadata": metadata},
                             _content_type="application/merge-patch+json"))

    async def event(self, plan: dict[str, Any], type_: str, reason: str, note: str) -> None:
        """An events.k8s.io/v1 Event about ``plan`` (best effort: an Event lost is not an upgrade lost)."""
        meta = plan["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(name=f"{meta['name']}.{uuid.uuid4().hex[:12]}", namespace=meta["namespace"]),
            event_time=now, reporting_controller=f"upgrade.uwm.io/{COMPONENT}",
            reporting_instance=os.environ.get("HOSTNAME", COMPONENT), action=reason, reason=reason,
            type=type_, note=note[:1024],
            regarding=client.V1ObjectReference(api_version=f"{GROUP}/{VERSION}", kind="UpgradePlan",
                                               name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid")),
        )
        with contextlib.suppress(KubeError):
            await self._call("posting an Event", lambda: self._events.create_namespaced_event(meta["namespace"], body))


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise KubeError(f"unexpected answer from the API server: {type(obj).__name__}", transient=True)
    return obj
