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


def main() -> int:
    """Run until SIGTERM/SIGINT."""
    from tfserving_operator.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"tfserving-operator: bad setting: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("TFSO_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf's own per-event debug lines are noise at scale.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import tfserving_operator.handlers  # noqa: F401  (registers the handlers)

    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            priority=int(os.environ.get("TFSO_PEERING_PRIORITY", "0")),
            liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
