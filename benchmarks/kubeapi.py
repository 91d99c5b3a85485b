"""A small JSON client for the benchmark's own API calls (admin credentials).

Benchmarks create a thousand objects and follow several watches while the
operator runs on the same two cores, so the client is kept cheap: raw JSON
over one persistent HTTPS connection per thread, no typed models, and
metadata-only watches where only names and owners matter.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from localdev.sim.cluster import SimCluster

Body = dict[str, Any]

# Ask for PartialObjectMetadata: watch events then carry metadata only.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
# Shows as the field manager of what the benchmark creates (and in API server logs).
USER_AGENT = "tfso-benchmark"
LIST_RETRIES = 30
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(RuntimeError):
    """A non-2xx answer."""

    def __init__(self, status: int, method: str, path: str, text: str) -> None:
        self.status = status
        super().__init__(f"{method} {path}: HTTP {status}: {text[:500]}")


class Api:
    """Admin access to one SimCluster's API server."""

    def __init__(self, cluster: SimCluster) -> None:
        self._host = "127.0.0.1"
        self._port = cluster.ports.apiserver
        self._ssl = cluster._ssl_context()
        self._local = threading.local()

    def _connection(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl, timeout=timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (),
    ) -> Body:
        """One request on this thread's keep-alive connection; the decoded answer."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if payload is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connection(timeout=60)
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        if resp.status >= 400 and resp.status not in ok:
            raise ApiError(resp.status, method, path, data.decode(errors="replace"))
        return json.loads(data) if data else {}

    def get(self, path: str, ok: tuple[int, ...] = ()) -> Body:
        return self.request("GET", path, ok=ok)

    def text(self, path: str) -> str:
        """GET a non-JSON path (e.g. /metrics) on a connection of its own."""
        conn = self._connection(timeout=30)
        try:
            conn.request("GET", path, headers={"User-Agent": USER_AGENT})
            resp = conn.getresponse()
            data = resp.read().decode()
            if resp.status >= 400:
                raise ApiError(resp.status, "GET", path, data)
            return data
        finally:
            conn.close()

    def watch(self, path: str, resource_version: str, metadata_only: bool = False) -> WatchStream:
        """Watch events from `resource_version` on (iterate it; `close()` from any thread)."""
        return WatchStream(self, path, resource_version, metadata_only)

    def list_rv(self, path: str, metadata_only: bool = False) -> tuple[list[Body], str]:
        """List a collection; its items and the resourceVersion to watch from.

        A 429 is retried after the server's Retry-After, as client-go does: right
        after a CRD is installed its storage answers "(re)initializing" for a while.
        """
        for _ in range(LIST_RETRIES):
            status, retry_after, data = self._list_once(path, metadata_only)
            if status != 429:
                break
            time.sleep(retry_after)
        if status >= 400:
            raise ApiError(status, "LIST", path, data.decode(errors="replace"))
        body = json.loads(data)
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    def _list_once(self, path: str, metadata_only: bool) -> tuple[int, float, bytes]:
        conn = self._connection(timeout=120)
        try:
            accept = METADATA_LIST if metadata_only else "application/json"
            conn.request("GET", path, headers={"Accept": accept, "User-Agent": USER_AGENT})
            resp = conn.getresponse()
            retry_after = float(resp.getheader("Retry-After") or 1)
            return resp.status, retry_after, resp.read()
        finally:
            conn.close()


class WatchStream:
    """One watch request; iterating yields its events until the server or `close` ends it."""

    def __init__(self, api: Api, path: str, resource_version: str, metadata_only: bool) -> None:
        query = urllib.parse.urlencode(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "3600",
            }
        )
        sep = "&" if "?" in path else "?"
        self._conn = api._connection(timeout=None)
        accept = METADATA_ONLY if metadata_only else "application/json"
        self._conn.request(
            "GET", f"{path}{sep}{query}", headers={"Accept": accept, "User-Agent": USER_AGENT}
        )
        self._resp = self._conn.getresponse()
        if self._resp.status >= 400:
            text = self._resp.read().decode(errors="replace")
            self._conn.close()
            raise ApiError(self._resp.status, "WATCH", path, text)

    def __iter__(self) -> Iterator[Body]:
        try:
            for line in self._resp:
                if line.strip():
                    yield json.loads(line)
        except (OSError, ValueError, http.client.HTTPException):
            return  # closed under us, or cut mid-line: the stream is over either way
        finally:
            self._conn.close()

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
