"""The kubelet's process factory: one ``PodServer`` run per container start.

``PodServer`` (server.py) is one run of tensorflow_model_server: ``run()``
returns how it ended (exit 255 when its first version fails to load, 0 for
``--version``), ``kill()`` is SIGKILL (137). A restarted container gets a new
run, built from the pod as it is then (its current volumes and flags).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .kubelet import ProcessFactory, ServerProcess
from .paths import ClusterLookup
from .server import PodServer, Runtime, serving_spec_from_pod


def standin_factory(
    runtime: Runtime, lookup: ClusterLookup, empty_dir_root: str = ""
) -> ProcessFactory:
    """Builds one ``PodServer`` per container start (emptyDir volumes under
    ``empty_dir_root``, where the pod's init containers wrote)."""

    def make(pod: Mapping[str, Any]) -> ServerProcess:
        return PodServer(serving_spec_from_pod(pod, lookup, empty_dir_root), runtime)

    return make
