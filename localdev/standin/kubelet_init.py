"""Init containers run for real, on this machine, as the kubelet would run them.

The local cluster has no container runtime, so an init container's image
cannot be started; its program can. ``HostInitRunner`` runs the exact
``command`` and ``args`` of the pod spec with the environment the kubelet
would give the container (literal values, ``secretKeyRef`` and
``configMapKeyRef`` resolved from the API, optional keys skipped), with two
substitutions that stand for the image and its mounts:

* the program: ``command[0]`` names a binary of the image; ``binaries`` maps
  its base name to the same program built for this machine at the image's
  version (rclone: localdev/sim/toolchain/rclone, the release puller.py's
  image holds);
* the file system: an argument that is a path under one of the container's
  ``volumeMounts`` is given as the folder of this machine behind that
  volume. ``emptyDir`` volumes live in ``<empty_dir_root>/<pod uid>/volumes/
  kubernetes.io~empty-dir/<name>`` (the kubelet's own layout), the folder the
  stand-in server resolves the same volume to (paths.py), so what the init
  container writes is what the server reads.

The process gets a scratch ``HOME`` of its own and no other variable of the
stand-in's environment (a container sees only its image's and the pod
spec's). Its stdout and stderr are the container's log: the kubelet's
termination message takes its tail (``FallbackToLogsOnError``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .paths import ClusterLookup, HostPath, PathResolver, empty_dir_path

# The image's PATH for programs the mapped binary starts (none, for rclone).
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A container runtime's exit code when the program cannot be started.
START_ERROR_EXIT_CODE = 128
# Lines of log kept per run: more than the kubelet's 80-line termination tail.
LOG_LINES_KEPT = 1000


class SecretLookup(Protocol):
    """Reads the Secrets env entries refer to (``None`` when absent)."""

    def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Secret as a dict (``data`` base64-encoded), or ``None``."""
        ...


class EnvLookup(ClusterLookup, SecretLookup, Protocol):
    """ConfigMaps, claims, volumes and Secrets."""


class CreateContainerConfigError(Exception):
    """The container cannot be created from its spec (the kubelet's
    ``CreateContainerConfigError``: a missing Secret or key that is not optional)."""


def _key_ref(
    ref: Mapping[str, Any], kind: str, namespace: str, source: Mapping[str, Any] | None
) -> str | None:
    """A ``secretKeyRef``/``configMapKeyRef`` value; ``None`` when optional and
    absent. Raises with the kubelet's wording when required and absent."""
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    if source is None:
        if optional:
            return None
        raise CreateContainerConfigError(f'{kind.lower()} "{name}" not found')
    data: Mapping[str, Any] = source.get("data") or {}
    if key not in data and kind == "ConfigMap" and key in (source.get("binaryData") or {}):
        data = {key: base64.b64decode(source["binaryData"][key]).decode()}
    if key not in data:
        if optional:
            return None
        raise CreateContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    value = data[key]
    return base64.b64decode(value).decode() if kind == "Secret" else str(value)


def container_env(
    container: Mapping[str, Any], namespace: str, lookup: EnvLookup
) -> dict[str, str]:
    """The environment the kubelet gives the container from its ``env``
    (Define Environment Variables for a Container; Distribute Credentials
    Securely Using Secrets). ``envFrom`` and fieldRef are not used by the
    operator's pods and are refused rather than ignored."""
    if container.get("envFrom"):
        raise CreateContainerConfigError("envFrom is not emulated by the stand-in")
    env: dict[str, str] = {}
    for entry in container.get("env") or ():
        name = entry["name"]
        source = entry.get("valueFrom")
        if source is None:
            env[name] = str(entry.get("value", ""))
            continue
        value: str | None
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = lookup.get_secret(namespace, ref.get("name", ""))
            value = _key_ref(ref, "Secret", namespace, secret)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = lookup.get_configmap(namespace, ref.get("name", ""))
            value = _key_ref(ref, "ConfigMap", namespace, cm)
        else:
            raise CreateContainerConfigError(f"env {name}: {sorted(source)} is not emulated")
        if value is not None:
            env[name] = value
    return env


class HostInitProcess:
    """One run of an init container's program on this machine."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> None:
        self.argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self.log_lines: list[str] = []

    async def run(self) -> int:
        """Run to the end; returns the exit code (128 when it cannot start)."""
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self._env,
                cwd=self._cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            self.log_lines.append(f"exec: {self.argv[0]!r}: {e.strerror or e}")
            return START_ERROR_EXIT_CODE
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.log_lines.append(raw.decode(errors="replace").rstrip("\n"))
            del self.log_lines[:-LOG_LINES_KEPT]
        return await self._proc.wait()

    async def kill(self) -> None:
        """SIGKILL (the pod is being deleted)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()


class HostInitRunner:
    """Builds the host run of one init container of one pod."""

    def __init__(self, lookup: EnvLookup, empty_dir_root: str, binaries: Mapping[str, str]) -> None:
        self._lookup = lookup
        self._empty_dir_root = empty_dir_root
        self._binaries = dict(binaries)

    def prepare(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> HostInitProcess:
        """The process to run; raises ``CreateContainerConfigError``."""
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        uid = meta.get("uid") or ""
        command = list(container.get("command") or ())
        if not command:
            raise CreateContainerConfigError(
                "the stand-in needs the init container's command (it has no image entrypoint)"
            )
        program = self._binaries.get(posixpath.basename(command[0]))
        if program is None:
            raise CreateContainerConfigError(
                f"no binary for {command[0]!r} on this machine (knows: {sorted(self._binaries)})"
            )
        resolver = PathResolver(pod, container, self._lookup, self._empty_dir_root)
        args = [self._host_path(resolver, a) for a in [*command[1:], *container.get("args", [])]]
        self._make_empty_dirs(pod, container)
        home = posixpath.join(self._empty_dir_root, uid, "containers", container.get("name", ""))
        os.makedirs(home, exist_ok=True)
        env = {"PATH": CONTAINER_PATH, "HOME": home}
        env.update(container_env(container, namespace, self._lookup))
        return HostInitProcess([program, *args], env, home)

    @staticmethod
    def _host_path(resolver: PathResolver, arg: str) -> str:
        if not arg.startswith("/"):
            return arg
        resolved = resolver.resolve(arg)
        return resolved.path if isinstance(resolved, HostPath) else arg

    def _make_empty_dirs(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
        """The kubelet creates a pod's emptyDir volumes before its containers start."""
        uid = (pod.get("metadata") or {}).get("uid") or ""
        volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or ()}
        for mount in container.get("volumeMounts") or ():
            volume = volumes.get(mount.get("name", ""), {})
            if "emptyDir" in volume:
                os.makedirs(
                    empty_dir_path(self._empty_dir_root, uid, volume["name"]), exist_ok=True
                )
