"""The model server core of one pod: config, version policy, loads, labels.

Mirrors how tensorflow_model_server manages versions:

* A file system poll (every ``--file_system_poll_wait_seconds``) lists each
  model's base path; numeric folder names are versions, anything else
  (``tmp-3``, ``.3``) is ignored. The version policy picks the *aspired*
  versions: ``latest { num_versions: N }`` (default N=1), ``all {}`` or
  ``specific { versions }``. A specific version with no folder is logged and
  looked for again at every poll. If any model's base path is missing the whole
  poll fails and no model changes, as in the real file system source.
* Start-up is ``ServerCore::Create`` (model_servers/server_core.cc at
  2.20.0): the initial config's labels are checked before anything loads
  (so a label without ``--allow_version_labels_for_unavailable_models``
  fails the start), then ``start`` waits, for each model, until a version
  reaches AVAILABLE or END (the highest such version counts, as in
  core/servable_state_monitor.cc); an END fails the start with
  ``N servable(s) did not become available: ...``
  (core/load_servables_fast.cc). A missing base path never produces a
  version: ``start`` waits forever, like the real server.
* Loads run on a pool of load slots (core/aspired_versions_manager.cc with
  its load executor): ``num_initial_load_threads`` (4 x NumSchedulableCPUs,
  a ServerCore option, not a flag) during the initial load, then
  ``--num_load_threads`` (0, meaning loads one at a time in the manager
  thread). So at start several versions, of one model or of several, are
  LOADING at once; later loads queue.
* The availability-preserving policy decides one action at a time per model:
  unload the lowest unaspired AVAILABLE version when no version is aspired, an
  aspired one is AVAILABLE, or more than one unaspired one is; otherwise ask
  for the highest new aspired version to be loaded (the load waits for a
  slot). So a new version loads before the old one unloads, and a version
  that failed to load leaves the old one serving.
* States go START -> LOADING -> AVAILABLE -> UNLOADING -> END; a failed load
  is retried ``--max_num_load_retries`` times, ``--load_retry_interval_micros``
  apart (staying LOADING, holding its load slot), then ends in END with the
  error. Warm-up (``warm_up``, see warmup.py) is part of the load: it runs
  while the version is LOADING, and its failure is a failed load. A failed
  version that stays aspired is not loaded again. END states are kept: status
  answers list every version ever seen, like the real state monitor.
* A config (from the file, polled every
  ``--model_config_file_poll_wait_seconds``, or from
  ``HandleReloadConfigRequest``) replaces the previous one whole. A version
  label may only name an AVAILABLE version, unless
  ``--allow_version_labels_for_unavailable_models`` and the label is new or
  unchanged; otherwise the reload fails with FAILED_PRECONDITION and the old
  config stays. A reload waits until every newly added model has a version
  AVAILABLE (forever if its base path is missing, like the real server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum

import grpc
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

from tfserving_operator.aio import wait_event

from .config import (
    LoadDelays,
    ServerFlags,
    describe_error,
    parse_model_server_config,
    validate_config,
)
from .errors import ServingError, failed_precondition, invalid_argument, not_found
from .models import LoadedModel, ModelCache, ModelLease
from .output import ProcessOutput
from .paths import PathError, PathResolver

log = logging.getLogger(__name__)


class State(IntEnum):
    """``ModelVersionStatus.State`` values."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    """What ``GetModelStatus`` reports for one version."""

    state: State
    error: ServingError | None = None


@dataclass
class _Harness:
    version: int
    path: str
    aspired: bool = True
    state: State = State.START
    error: ServingError | None = None
    lease: ModelLease | None = None
    scheduled: bool = False  # a load was asked for; it may still wait for a slot
    cancel_retries: asyncio.Event = field(default_factory=asyncio.Event)

    def servable_id(self, model: str) -> str:
        """``ServableId::DebugString()``."""
        return f"{{name: {model} version: {self.version}}}"


class _Model:
    def __init__(self, config: ModelConfig) -> None:
        self.name: str = config.name
        self.config = config
        self.harnesses: dict[int, _Harness] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.loads: set[asyncio.Task[None]] = set()
        self.removed = False


class LoadSlots:
    """The load executor's threads: at most ``capacity`` loads at once, first come
    first served; the capacity changes after the initial load."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self.busy = 0
        self.peak = 0  # the most loads ever running at once, for tests and logs
        self._waiters: deque[asyncio.Future[None]] = deque()

    def resize(self, capacity: int) -> None:
        """Take a new thread count (``SetNumLoadThreads``); running loads go on."""
        self.capacity = max(capacity, 1)
        self._hand_out()

    def _hand_out(self) -> None:
        while self._waiters and self.busy < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def _take(self) -> None:
        self.busy += 1
        self.peak = max(self.peak, self.busy)

    async def __aenter__(self) -> None:
        if self.busy < self.capacity and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot came with the cancellation
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self.busy -= 1
        self._hand_out()


class _PollError(Exception):
    pass


def _numeric_children(base: str) -> dict[int, str]:
    children: dict[int, str] = {}
    for child in sorted(os.listdir(base)):
        # The real server parses names as int64: "7" and "007" are version 7
        # (the later name wins); "tmp-7", ".7", "7a" are not versions.
        if child.isascii() and child.isdigit():
            children[int(child)] = child
    return children


def _aspired_versions(
    config: ModelConfig, base: str, children: dict[int, str]
) -> tuple[dict[int, str], list[str]]:
    warnings: list[str] = []
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        chosen = sorted(children)
    elif choice == "specific":
        wanted = set(policy.specific.versions)
        chosen = sorted(v for v in children if v in wanted)
        for missing in sorted(wanted - set(children)):
            warnings.append(
                f"Version {missing} of servable {config.name}, which was requested to be "
                "served as a 'specific' version in the servable's version policy, was not "
                "found in the file system"
            )
    else:  # latest, and the default policy (latest 1)
        n = max(policy.latest.num_versions, 1) if choice == "latest" else 1
        chosen = sorted(children)[-n:]
    if not chosen:
        warnings.append(
            f"No versions of servable {config.name} found under base path {config.base_path}. "
            "Did you forget to name your leaf directory as a number (eg. '/1/')?"
        )
    return {v: os.path.join(base, children[v]) for v in chosen}, warnings


class VersionManager:
    """Config, version states and loaded versions of one model server (one pod)."""

    def __init__(
        self,
        *,
        name: str,
        flags: ServerFlags,
        resolver: PathResolver,
        cache: ModelCache,
        load_delays: Callable[[], LoadDelays] = LoadDelays,
        output: ProcessOutput | None = None,
        warm_up: Callable[[LoadedModel, str], None] | None = None,
        initial_load_threads: int = 4,
    ) -> None:
        self.name = name
        self.output = output or ProcessOutput(name)
        self._warm_up = warm_up
        self._initial_load_threads = initial_load_threads
        self.slots = LoadSlots(max(flags.num_load_threads, 1))
        self.flags = flags
        self._resolver = resolver
        self._cache = cache
        self._load_delays = load_delays
        self._models: dict[str, _Model] = {}
        self._monitor: dict[str, dict[int, VersionStatus]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._config: ModelServerConfig | None = None
        self._file_text_applied: str | None = None
        self._config_lock = asyncio.Lock()
        self._poll_now = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._logged: dict[str, str] = {}
        self._stopped = False

    # ------------------------------------------------------------------ life

    async def start(self, config: ModelServerConfig, file_text: str | None = None) -> None:
        """``ServerCore::Create``: apply the initial config and wait for its first loads.

        Raises ``ServingError`` with the error the real server exits with (bad
        config, a label on a version that is not AVAILABLE, a first version
        that ended in END). Never returns while a model has no version yet (a
        missing base path or one without version folders).
        """
        self.slots.resize(self._initial_load_threads)
        self._tasks.append(asyncio.create_task(self._fs_poll_loop(), name=f"{self.name} fs poll"))
        await self._apply(config, source="initial config", file_text=file_text)
        names = [m.name for m in config.model_config_list.config]
        await self._wait_initial_load(names)
        self.slots.resize(max(self.flags.num_load_threads, 1))
        if self.flags.model_config_file and self.flags.model_config_file_poll_wait_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self._config_file_loop(), name=f"{self.name} config poll")
            )

    async def _wait_initial_load(self, names: list[str]) -> None:
        failed: list[str] = []
        for name in names:

            def reached(name: str = name) -> bool:
                states = self._monitor.get(name, {}).values()
                return any(s.state in (State.AVAILABLE, State.END) for s in states)

            await self.wait_for(reached)
            versions = self._monitor.get(name, {})
            version = max(v for v, s in versions.items() if s.state in (State.AVAILABLE, State.END))
            status = versions[version]
            if status.state != State.AVAILABLE:
                error = f" due to error: {describe_error(status.error)}" if status.error else ""
                failed.append(f"{{{{name: {name} version: {version}}}{error}}}, ")
        if failed:
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                f"{len(failed)} servable(s) did not become available: {{{''.join(failed)}}}",
            )

    async def stop(self) -> None:
        """Stop polling and loading, and let go of every loaded version."""
        self._stopped = True
        tasks = self._tasks + [m.task for m in self._models.values() if m.task is not None]
        tasks += [t for m in self._models.values() for t in m.loads]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for model in self._models.values():
            for harness in model.harnesses.values():
                if harness.lease is not None:
                    harness.lease.release()
                    harness.lease = None

    # --------------------------------------------------------------- queries

    def model_status(self, name: str, version: int | None) -> list[tuple[int, VersionStatus]]:
        """``GetModelStatus``: one version, or every version seen, highest first."""
        if version is not None:
            status = self._monitor.get(name, {}).get(version)
            if status is None:
                raise not_found(f"Could not find version {version} of model {name}")
            return [(version, status)]
        versions = self._monitor.get(name)
        if not versions:
            raise not_found(f"Could not find any versions of model {name}")
        return sorted(versions.items(), reverse=True)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> tuple[int, LoadedModel]:
        """The AVAILABLE version a request is for: by number, by label, or the
        highest AVAILABLE one. Raises the real server's errors otherwise."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label:
            labelled = self._labels.get(name, {}).get(label)
            if labelled is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labelled
        model = self._models.get(name)
        harnesses = list(model.harnesses.values()) if model else []
        if version is not None:
            for h in harnesses:
                if h.version == version and h.state == State.AVAILABLE and h.lease:
                    return version, h.lease.model
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        ready = [h for h in harnesses if h.state == State.AVAILABLE and h.lease]
        if not ready:
            raise not_found(f"Servable not found for request: Latest({name})")
        best = max(ready, key=lambda h: h.version)
        assert best.lease is not None
        return best.version, best.lease.model

    def labels(self, name: str) -> dict[str, int]:
        """The version labels of a model in effect."""
        return dict(self._labels.get(name, {}))

    @property
    def config(self) -> ModelServerConfig | None:
        """The config in effect (``None`` before the first one)."""
        return self._config

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking at every state change."""
        while not predicate():
            event = self._changed
            await event.wait()

    # ---------------------------------------------------------------- config

    async def reload_config(self, config: ModelServerConfig) -> None:
        """``HandleReloadConfigRequest``: replace the config whole, or raise."""
        await self._apply(config, source="HandleReloadConfigRequest", file_text=None)

    async def _apply(self, config: ModelServerConfig, source: str, file_text: str | None) -> None:
        async with self._config_lock:
            initial = self._config is None
            if config.WhichOneof("config") is None:
                log.info("%s: taking no action for empty config (%s)", self.name, source)
                return
            if not initial and config.WhichOneof("config") != "model_config_list":
                raise failed_precondition(
                    "Cannot transition to requested config. It is only legal to transition "
                    "from one ModelConfigList to another."
                )
            validate_config(config)
            # The real server checks labels before it adds models, so on the
            # initial config no version is AVAILABLE yet (server_core.cc).
            labels = self._checked_labels(config)
            wanted = {m.name: m for m in config.model_config_list.config}
            added: list[str] = []
            for model in self._models.values():
                if model.name not in wanted and not model.removed:
                    log.info("%s: model %s left the config: unloading it", self.name, model.name)
                    model.removed = True
                    self._set_aspired(model, {})
            for name, model_config in wanted.items():
                current = self._models.get(name)
                if current is None:
                    current = _Model(model_config)
                    self._models[name] = current
                    current.task = asyncio.create_task(
                        self._manage(current), name=f"{self.name} {name}"
                    )
                    added.append(name)
                elif current.removed:
                    current.removed = False  # back before its unload finished
                    added.append(name)
                current.config = model_config
            self._labels = labels
            self._config = config
            self._file_text_applied = file_text
            names = ", ".join(sorted(wanted)) or "none"
            log.info("%s: config applied from %s: models %s", self.name, source, names)
            self._poll_now.set()
            if not initial and added:
                await self._wait_available(added)

    def _checked_labels(self, config: ModelServerConfig) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        for model in config.model_config_list.config:
            for label, version in model.version_labels.items():
                allow_any = False
                if self.flags.allow_version_labels_for_unavailable_models:
                    existing = self._labels.get(model.name, {}).get(label)
                    allow_any = existing is None or existing == version
                status = self._monitor.get(model.name, {}).get(version)
                if not allow_any and (status is None or status.state != State.AVAILABLE):
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference"
                    )
                labels.setdefault(model.name, {})[label] = version
        return labels

    async def _wait_available(self, names: Iterable[str]) -> None:
        failed: list[str] = []
        for name in names:

            def settled(name: str = name) -> bool:
                versions = self._monitor.get(name, {})
                if any(s.state == State.AVAILABLE for s in versions.values()):
                    return True
                busy = any(s.state < State.AVAILABLE for s in versions.values())
                return bool(versions) and not busy and any(s.error for s in versions.values())

            await self.wait_for(settled)
            versions = self._monitor.get(name, {})
            if not any(s.state == State.AVAILABLE for s in versions.values()):
                failed.extend(f"{{name: {name} version: {v}}}" for v in sorted(versions))
        if failed:
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                "Some models did not become available: {" + ", ".join(failed) + ", }",
            )

    async def _config_file_loop(self) -> None:
        path = self.flags.model_config_file
        interval = self.flags.model_config_file_poll_wait_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                text = await asyncio.to_thread(self._resolver.read_text, path)
                if text != self._file_text_applied:
                    config = parse_model_server_config(text, path)
                    await self._apply(config, source=path, file_text=text)
                self._log_once("config", "")
            except (PathError, ServingError) as e:
                message = describe_error(e) if isinstance(e, ServingError) else str(e)
                # server.cc's PollFilesystemAndReloadConfig logs and keeps the old config.
                self._log_once("config", f"reading config file {path} failed: {message}")

    # ------------------------------------------------------------ versions

    async def _fs_poll_loop(self) -> None:
        interval = self.flags.file_system_poll_wait_seconds
        while True:
            if self._config is not None:
                await self._poll_once()
            if interval <= 0:
                await self._poll_now.wait()
            else:
                await wait_event(self._poll_now, interval)
            self._poll_now.clear()

    def _scan(self, configs: list[ModelConfig]) -> tuple[dict[str, dict[int, str]], list[str]]:
        found: dict[str, dict[int, str]] = {}
        warnings: list[str] = []
        for config in configs:
            try:
                base = self._resolver.host_dir(config.base_path)
            except PathError as e:
                raise _PollError(
                    f"Could not find base path {config.base_path} for servable "
                    f"{config.name} with error {e}"
                ) from None
            try:
                children = _numeric_children(base)
            except OSError as e:
                raise _PollError(
                    f"Could not find base path {config.base_path} for servable "
                    f"{config.name} with error NOT_FOUND: {base} (host path): {e.strerror}"
                ) from None
            found[config.name], model_warnings = _aspired_versions(config, base, children)
            warnings.extend(model_warnings)
        return found, warnings

    async def _poll_once(self) -> None:
        models = [m for m in self._models.values() if not m.removed]
        try:
            found, warnings = await asyncio.to_thread(self._scan, [m.config for m in models])
        except _PollError as e:
            self._log_once("poll", f"file system poll failed, no model updated: {e}")
            return
        self._log_once("poll", "")
        self._log_once("poll-warnings", "; ".join(warnings))
        for model in models:
            if not model.removed and model.name in found:
                self._set_aspired(model, found[model.name])

    def _log_once(self, topic: str, message: str) -> None:
        # Polls repeat every second: log a problem when it starts or changes,
        # and once when it clears, not at every poll.
        previous = self._logged.get(topic, "")
        if message == previous:
            return
        self._logged[topic] = message
        if message:
            self.output.warning("file_system_storage_path_source.cc", message)
        elif previous:
            log.info("%s: resolved: %s", self.name, previous)

    def _publish(self, model: _Model, h: _Harness) -> None:
        versions = self._monitor.setdefault(model.name, {})
        previous = versions.get(h.version)
        versions[h.version] = VersionStatus(h.state, h.error)
        log.info(
            "%s: model %s version %d: %s -> %s%s",
            self.name,
            model.name,
            h.version,
            previous.state.name if previous else "new",
            h.state.name,
            f" ({describe_error(h.error)})" if h.error else "",
        )
        # Wake every waiter once, then start a fresh event for the next change.
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _set_aspired(self, model: _Model, versions: dict[int, str]) -> None:
        for version, path in versions.items():
            h = model.harnesses.get(version)
            if h is None:
                h = _Harness(version, path)
                model.harnesses[version] = h
                self._publish(model, h)
            else:
                h.aspired = True
        for version, h in list(model.harnesses.items()):
            if version in versions:
                continue
            h.aspired = False
            if h.state == State.START:
                del model.harnesses[version]
                h.state = State.END
                self._publish(model, h)
            elif h.state == State.END:
                del model.harnesses[version]  # a failed version: its END stays in the monitor
            elif h.state == State.LOADING:
                h.cancel_retries.set()
        model.wake.set()

    @staticmethod
    def _next_action(model: _Model) -> tuple[Callable[..., Awaitable[None]], _Harness] | None:
        hs = list(model.harnesses.values())
        aspired = [h for h in hs if h.aspired]
        ready_unaspired = sorted(
            (h for h in hs if not h.aspired and h.state == State.AVAILABLE),
            key=lambda h: h.version,
        )
        aspired_ready = any(h.state == State.AVAILABLE for h in aspired)
        if ready_unaspired and (not aspired or aspired_ready or len(ready_unaspired) > 1):
            return VersionManager._unload, ready_unaspired[0]
        new = [h for h in aspired if h.state == State.START and not h.scheduled]
        if new:
            return VersionManager._load, max(new, key=lambda h: h.version)
        return None

    async def _manage(self, model: _Model) -> None:
        while True:
            await model.wake.wait()
            model.wake.clear()
            while (action := self._next_action(model)) is not None:
                step, harness = action
                if step is VersionManager._load:
                    # Loads run on the load slots, so the next new version can be
                    # asked for while this one loads (parallel initial loads).
                    harness.scheduled = True
                    task = asyncio.create_task(
                        self._load(model, harness), name=f"{self.name} load {harness.version}"
                    )
                    model.loads.add(task)
                    task.add_done_callback(model.loads.discard)
                else:
                    await step(self, model, harness)
            if model.removed and not model.harnesses and not model.loads:
                if self._models.get(model.name) is model:
                    del self._models[model.name]
                return

    async def _load(self, model: _Model, h: _Harness) -> None:
        try:
            async with self.slots:
                if model.harnesses.get(h.version) is h and h.state == State.START:
                    await self._load_with_retries(model, h)
        finally:
            model.wake.set()  # the policy may now unload an older version

    async def _load_with_retries(self, model: _Model, h: _Harness) -> None:
        """``LoaderHarness::Load`` with ``Retry`` (core/loader_harness.cc, util/retrier.cc)."""
        servable = h.servable_id(model.name)
        out = self.output
        out.info("loader_harness.cc:70", f"Approving load for servable version {servable}")
        h.state = State.LOADING
        self._publish(model, h)
        out.info("loader_harness.cc:78", f"Loading servable version {servable}")
        delay = self._load_delays().for_version(h.version)
        if delay > 0:
            log.info("%s: %s: load delayed %.1fs by annotation", self.name, servable, delay)
            await asyncio.sleep(delay)
        tries = 0
        while True:
            if tries > 0:
                out.info(
                    "retrier.cc:36", f"Retrying of Loading servable: {servable} retry: {tries}"
                )
            try:
                lease = await self._load_once(h)
                break
            except ServingError as e:
                out.error(
                    "retrier.cc:40", f"Loading servable: {servable} failed: {describe_error(e)}"
                )
                tries += 1
                give_up = tries > self.flags.max_num_load_retries
                if not give_up:
                    await wait_event(h.cancel_retries, self.flags.load_retry_interval_seconds)
                if h.cancel_retries.is_set() and not give_up:
                    out.info(
                        "retrier.cc:47", f"Retrying of Loading servable: {servable} was cancelled."
                    )
                if give_up:
                    out.info(
                        "retrier.cc:50",
                        f"Retrying of Loading servable: {servable} exhausted max_num_retries: "
                        f"{self.flags.max_num_load_retries}",
                    )
                if give_up or h.cancel_retries.is_set():
                    out.info(
                        "loader_harness.cc:181",
                        f"Encountered an error for servable version {servable}: "
                        f"{describe_error(e)}",
                    )
                    h.state, h.error = State.END, e
                    self._publish(model, h)
                    if not h.aspired:
                        model.harnesses.pop(h.version, None)
                    return
        if self._stopped:
            lease.release()
            return
        out.info("loader_harness.cc:104", f"Successfully loaded servable version {servable}")
        h.lease, h.state, h.error = lease, State.AVAILABLE, None
        self._publish(model, h)

    async def _load_once(self, h: _Harness) -> ModelLease:
        """One try: the SavedModel load, then the warm-up, as one loader ``Load``."""
        lease = await self._cache.acquire(h.path)
        if self._warm_up is None:
            return lease
        try:
            await asyncio.to_thread(self._warm_up, lease.model, h.path)
        except BaseException:
            lease.release()
            raise
        return lease

    async def _unload(self, model: _Model, h: _Harness) -> None:
        servable = h.servable_id(model.name)
        h.state = State.UNLOADING
        self._publish(model, h)
        self.output.info("loader_harness.cc:164", f"Quiescing servable version {servable}")
        if h.lease is not None:
            h.lease.release()
            h.lease = None
        self.output.info("loader_harness.cc:136", f"Done unloading servable version {servable}")
        h.state = State.END
        model.harnesses.pop(h.version, None)
        self._publish(model, h)
