"""The operator's one entry point: `tfserving-operator` (image, `make run`, tests).

Runs kopf with our handlers, cluster-wide or in TFSO_NAMESPACES, with a
liveness endpoint, and with peering when TFSO_PEERING names a peering object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import kopf

if TYPE_CHECKING:
    from tfserving_operator.settings import Settings

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def configure_logging(log_format: str, level: str) -> None:
    """Plain lines for people, or one JSON object per line for log pipelines."""
    handler = logging.StreamHandler()
    if log_format == "json":
        # python-json-logger comes with kopf (it uses it for the same purpose).
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=True)
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def main() -> int:
    """Run until SIGTERM/SIGINT."""
    from tfserving_operator.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"tfserving-operator: bad setting: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, os.environ.get("TFSO_LOG_LEVEL", "INFO").upper())
    # kopf's own per-event debug lines are noise at scale.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import tfserving_operator.handlers  # noqa: F401  (registers the handlers)

    asyncio.run(run(settings))
    return 0


async def run(settings: Settings) -> None:
    """kopf.operator(), unrolled: spawn kopf's tasks, follow its peering pause
    (pause.py), and stop on the first SIGTERM/SIGINT however many follow."""
    from tfserving_operator.pause import PauseFollower, pause_toggles

    existing = set(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[signal.Signals] = loop.create_future()
    follower = PauseFollower()
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.peering.lifetime = settings.peering_lifetime_seconds
    tasks = await kopf.spawn_tasks(
        settings=kopf_settings,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        # Peered replicas need distinct priorities (kopf pauses equal ones).
        priority=settings.peering_priority_or_random() if settings.peering else 0,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
        stop_flag=stop,
        memo=kopf.Memo(pause=follower),
    )
    # kopf's own handlers call set_result on one future per signal: a second
    # signal while stopping (a supervisor repeating SIGTERM, Ctrl+C after
    # SIGTERM) raised InvalidStateError in the loop's callback and printed
    # its traceback. Ours set the stop flag once and ignore repeats.
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, _stop_once, stop, signum)
    if settings.peering:  # a standalone operator never pauses
        follower.toggles = pause_toggles(tasks)
        tasks = [*tasks, asyncio.create_task(follower.run(), name="tfso peering pause")]
    try:
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        _ignore_stop_signals(loop)


def _ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """From here to the exit, a repeated stop signal changes nothing.

    Closing the loop would put the default dispositions back (SIGTERM ends
    the process, SIGINT raises KeyboardInterrupt), so a supervisor repeating
    SIGTERM while the operator exits would turn a clean exit 0 into a death
    by signal. The process is stopping already; SIGKILL still ends it.
    """
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


def _stop_once(stop: asyncio.Future[signal.Signals], signum: signal.Signals) -> None:
    if not stop.done():
        stop.set_result(signum)


if __name__ == "__main__":
    sys.exit(main())
