"""The one transport to the Kubernetes API: raw JSON requests, off the event loop.

Why not the generated typed API classes: they build and validate pydantic
models for every object (slow at the scale we run, and lossy for fields the
client does not know); the operator works with plain dicts it renders
itself. The kubernetes package still does the hard parts (kubeconfig,
in-cluster config, TLS, tokens, connection pooling); this adds paths and a
thread pool. Writes go through apply.py only; this module has no opinion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tfserving_operator.kinds import BY_KIND
from tfserving_operator.metrics import CODE_NO_ANSWER, METRICS, Metrics


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.reason = str(body.get("reason", ""))
        self.message = str(body.get("message", body))
        super().__init__(f"HTTP {status} {self.reason}: {self.message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404


def path_for(kind: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    """REST path of a namespaced object (or collection when name is None)."""
    info = BY_KIND[kind]
    prefix, plural = info.path_prefix, info.plural
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class Kube:
    """Sends requests with a kubernetes.client.ApiClient from a thread pool."""

    def __init__(self, api_client: Any, workers: int = 16, metrics: Metrics = METRICS) -> None:
        self._client = api_client
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        # urllib3 keeps one connection per worker thread at most.
        api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = workers
        # Requests other than GET sent since start: who writes (peering tests
        # count the writers; kopf's own keep-alives do not go through here).
        self.writes = 0

    def close(self) -> None:
        """Stop the thread pool (outstanding requests finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str | None,
        query: list[tuple[str, str]],
        timeout: float,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*serialized, _request_timeout=timeout)
        response.read()
        data = json.loads(response.data) if response.data else {}
        return int(response.status), data

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: Iterable[tuple[str, str]] = (),
        timeout: float = 30.0,
        ok_statuses: Iterable[int] = (),
    ) -> dict[str, Any]:
        """Send one request; return the decoded body or raise ApiError."""
        loop = asyncio.get_running_loop()
        if method != "GET":
            self.writes += 1
        try:
            status, data = await loop.run_in_executor(
                self._pool, self._send, method, path, body, content_type, list(query), timeout
            )
        except Exception:
            self._metrics.observe_request(method, CODE_NO_ANSWER)
            raise
        self._metrics.observe_request(method, status)
        if status >= 400 and status not in set(ok_statuses):
            raise ApiError(status, data)
        return data
