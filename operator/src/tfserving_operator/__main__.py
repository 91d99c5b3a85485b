"""The operator's one entry point: `tfserving-operator` (image, `make run`, tests).

Runs kopf with our handlers, cluster-wide or in TFSO_NAMESPACES, with a
liveness endpoint, and with peering when TFSO_PEERING names a peering object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import kopf


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

    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            # Peered replicas need distinct priorities (kopf pauses equal ones).
            priority=settings.peering_priority_or_random() if settings.peering else 0,
            liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
