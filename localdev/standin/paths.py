"""Resolve a path inside the model server container to something on this machine.

A container path goes through the pod's ``volumeMounts`` (the longest
``mountPath`` that contains it, honouring ``subPath``) to one of its
``volumes``:

* ``hostPath``: a directory of this machine;
* ``persistentVolumeClaim``: the claim's bound PersistentVolume, whose
  ``spec.hostPath.path`` or ``spec.local.path`` is a directory of this machine;
* ``configMap``: a file whose text is read from the API (``items`` honoured);
* ``emptyDir``: a folder per pod and volume under the stand-in's emptyDir
  root (``empty_dir_path``), where the pod's init containers, run on this
  machine (kubelet_init.py), wrote;
* anything else (``nfs``, ...), a path on no volume, or a URI base path:
  unreachable here, like a path that does not exist.

Everything here is synchronous and free of Kubernetes client code: the cluster
is reached through the small ``ClusterLookup`` interface, so tests feed plain
dicts.
"""

from __future__ import annotations

import base64
import logging
import posixpath
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .config import is_uri

log = logging.getLogger(__name__)


class ClusterLookup(Protocol):
    """Reads the objects a pod's volumes refer to (``None`` when absent)."""

    def get_configmap(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The ConfigMap as a dict (``data``/``binaryData``), or ``None``."""
        ...

    def get_pvc(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The PersistentVolumeClaim as a dict, or ``None``."""
        ...

    def get_pv(self, name: str) -> Mapping[str, Any] | None:
        """The PersistentVolume as a dict, or ``None``."""
        ...


class NoCluster:
    """A ``ClusterLookup`` that finds nothing (hostPath-only pods, unit tests)."""

    def get_configmap(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """Always ``None``."""
        return None

    def get_pvc(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """Always ``None``."""
        return None

    def get_pv(self, name: str) -> Mapping[str, Any] | None:
        """Always ``None``."""
        return None


@dataclass(frozen=True)
class HostPath:
    """The container path is this path on this machine."""

    path: str


@dataclass(frozen=True)
class ConfigMapFile:
    """The container path is a file projected from a ConfigMap."""

    namespace: str
    name: str
    path_in_volume: str
    items: tuple[tuple[str, str], ...] | None
    frozen: bool  # mounted with subPath: the kubelet never updates such a file


@dataclass(frozen=True)
class Unreachable:
    """The container path cannot be reached from this machine."""

    reason: str


Resolved = HostPath | ConfigMapFile | Unreachable


class PathError(Exception):
    """A container path that cannot be read; the message says why."""


def empty_dir_path(root: str, pod_uid: str, volume: str) -> str:
    """Where an emptyDir volume of a pod lives on this machine (the kubelet's layout)."""
    return posixpath.join(root, pod_uid, "volumes", "kubernetes.io~empty-dir", volume)


def _within(path: str, mount_path: str) -> bool:
    if mount_path == "/":
        return True
    return path == mount_path or path.startswith(mount_path.rstrip("/") + "/")


def _join(base: str, rel: str) -> str:
    return posixpath.normpath(posixpath.join(base, rel)) if rel else base


class PathResolver:
    """Resolves and reads container paths of one pod's model server container."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        lookup: ClusterLookup,
        empty_dir_root: str = "",
    ) -> None:
        meta = pod.get("metadata") or {}
        self.namespace: str = meta.get("namespace") or "default"
        self._uid: str = meta.get("uid") or ""
        self._empty_dir_root = empty_dir_root
        self._volumes = {
            v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or [] if "name" in v
        }
        self._mounts = [m for m in container.get("volumeMounts") or [] if "mountPath" in m]
        self._lookup = lookup
        self._lock = threading.Lock()
        self._frozen_files: dict[str, str] = {}
        self._pv_paths: dict[str, str] = {}

    def resolve(self, container_path: str) -> Resolved:
        """Where ``container_path`` leads on this machine (never raises)."""
        if is_uri(container_path):
            return Unreachable(
                f"{container_path} is a URI; the stand-in has no object storage to reach it"
            )
        if not container_path.startswith("/"):
            return Unreachable(f"{container_path} is not an absolute path")
        path = posixpath.normpath(container_path)
        candidates = [m for m in self._mounts if _within(path, posixpath.normpath(m["mountPath"]))]
        if not candidates:
            return Unreachable(
                f"{path} is on no volume (the container's own file system is empty here)"
            )
        mount = max(candidates, key=lambda m: len(posixpath.normpath(m["mountPath"])))
        mount_path = posixpath.normpath(mount["mountPath"])
        rel = "" if path == mount_path else posixpath.relpath(path, mount_path)
        if mount.get("subPathExpr"):
            return Unreachable(f"volume mount {mount_path} uses subPathExpr (not supported)")
        sub_path = mount.get("subPath") or ""
        in_volume = posixpath.normpath(posixpath.join(sub_path, rel)) if (sub_path or rel) else ""
        if in_volume in (".", ""):
            in_volume = ""
        if in_volume.startswith(".."):
            return Unreachable(f"{path} escapes its volume")
        volume = self._volumes.get(mount.get("name", ""))
        if volume is None:
            return Unreachable(f"volume mount {mount_path} names no volume of the pod")
        return self._resolve_in_volume(volume, in_volume, frozen=bool(sub_path))

    def _resolve_in_volume(
        self, volume: Mapping[str, Any], in_volume: str, frozen: bool
    ) -> Resolved:
        name = volume.get("name", "?")
        if "hostPath" in volume:
            return HostPath(_join(volume["hostPath"]["path"], in_volume))
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", "")
            try:
                root = self._pv_root(claim)
            except PathError as e:
                return Unreachable(str(e))
            return HostPath(_join(root, in_volume))
        if "emptyDir" in volume and self._empty_dir_root:
            return HostPath(_join(empty_dir_path(self._empty_dir_root, self._uid, name), in_volume))
        if "configMap" in volume:
            source = volume["configMap"]
            items = source.get("items")
            return ConfigMapFile(
                namespace=self.namespace,
                name=source.get("name", ""),
                path_in_volume=in_volume,
                items=tuple((i["key"], i["path"]) for i in items) if items else None,
                frozen=frozen,
            )
        kinds = [k for k in volume if k != "name"]
        kind = kinds[0] if kinds else "unknown"
        return Unreachable(f"volume {name} is a {kind} volume, which the stand-in cannot reach")

    def _pv_root(self, claim: str) -> str:
        with self._lock:
            if claim in self._pv_paths:
                return self._pv_paths[claim]
        pvc = self._lookup.get_pvc(self.namespace, claim)
        if pvc is None:
            raise PathError(f"PersistentVolumeClaim {self.namespace}/{claim} not found")
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if not pv_name:
            raise PathError(f"PersistentVolumeClaim {self.namespace}/{claim} is not bound")
        pv = self._lookup.get_pv(pv_name)
        if pv is None:
            raise PathError(f"PersistentVolume {pv_name} not found")
        spec = pv.get("spec") or {}
        root = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not root:
            raise PathError(f"PersistentVolume {pv_name} has neither spec.hostPath nor spec.local")
        with self._lock:
            # A bound claim never moves to another volume: cache the answer.
            self._pv_paths[claim] = root
        return str(root)

    def host_dir(self, container_path: str) -> str:
        """The directory of this machine behind ``container_path``; raises ``PathError``."""
        resolved = self.resolve(container_path)
        if isinstance(resolved, HostPath):
            return resolved.path
        if isinstance(resolved, ConfigMapFile):
            raise PathError(f"{container_path} is on a configMap volume, not a directory")
        raise PathError(resolved.reason)

    def read_text(self, container_path: str) -> str:
        """The text of the file at ``container_path``; raises ``PathError``."""
        resolved = self.resolve(container_path)
        if isinstance(resolved, Unreachable):
            raise PathError(resolved.reason)
        if isinstance(resolved, HostPath):
            try:
                with open(resolved.path, encoding="utf-8") as f:
                    return f.read()
            except OSError as e:
                raise PathError(f"{container_path} (host path {resolved.path}): {e}") from None
        if resolved.frozen:
            with self._lock:
                if container_path in self._frozen_files:
                    return self._frozen_files[container_path]
        text = self._read_configmap_file(resolved, container_path)
        if resolved.frozen:
            with self._lock:
                self._frozen_files.setdefault(container_path, text)
                return self._frozen_files[container_path]
        return text

    def _read_configmap_file(self, ref: ConfigMapFile, container_path: str) -> str:
        cm = self._lookup.get_configmap(ref.namespace, ref.name)
        if cm is None:
            raise PathError(f"{container_path}: ConfigMap {ref.namespace}/{ref.name} not found")
        data: dict[str, str] = dict(cm.get("data") or {})
        for key, value in (cm.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value).decode("utf-8", errors="replace")
        if ref.items is None:
            files = data
        else:
            files = {path: data[key] for key, path in ref.items if key in data}
        if ref.path_in_volume in files:
            return files[ref.path_in_volume]
        raise PathError(
            f"{container_path}: no file {ref.path_in_volume or '/'} in ConfigMap "
            f"{ref.namespace}/{ref.name} (it has: {', '.join(sorted(files)) or 'nothing'})"
        )
