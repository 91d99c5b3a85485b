"""``python -m localdev.standin --kubeconfig PATH``: play tensorflow_model_server for
every Running ServedModel pod of the local test cluster (test infrastructure)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from tfserving_operator.aio import wait_event

# TensorFlow's C++ start-up chatter drowns the stand-in's own log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("localdev.standin")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m localdev.standin",
        description="Stand-in for tensorflow_model_server in the local test cluster.",
    )
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to watch")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO: one line per pod and per version state change)",
    )
    parser.add_argument(
        "--load-threads", type=int, default=2, help="threads loading SavedModels (default 2)"
    )
    parser.add_argument(
        "--infer-threads", type=int, default=4, help="threads running requests (default 4)"
    )
    parser.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="NumSchedulableCPUs() every pod's server sees: 4 x this is the default of "
        "--grpc_max_threads, --rest_api_num_threads and the initial load threads "
        "(default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--tf-threads",
        type=int,
        default=2,
        help="TensorFlow intra- and inter-op threads (default 2)",
    )
    parser.add_argument(
        "--empty-dir-root",
        default="",
        help="folder holding the pods' emptyDir volumes; init containers run on this "
        "machine only when set (kubelet_init.py)",
    )
    parser.add_argument(
        "--binary",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the program an init container's command NAME runs here (repeatable), "
        "e.g. rclone=/path/to/rclone",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    """Watch pods and serve them until SIGTERM or SIGINT."""
    from kubernetes import client, config

    from .kubelet import PodApi, PodKubelets
    from .kubelet_init import HostInitRunner
    from .kubelet_process import standin_factory
    from .models import configure_tensorflow
    from .pods import SERVED_MODEL_LABEL, KubeLookup, Watcher
    from .server import Runtime

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    if not os.path.exists(args.kubeconfig):
        # Started alongside the control plane, the kubeconfig may come later.
        log.warning("kubeconfig %s does not exist yet; waiting for it", args.kubeconfig)
        while not os.path.exists(args.kubeconfig):
            if await wait_event(stop, 0.5):
                return
    configure_tensorflow(args.tf_threads)
    api = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    runtime = Runtime.create(args.load_threads, args.infer_threads, args.cpus)
    lookup = KubeLookup(api)
    # The stand-in plays the kubelet for model-server pods too (kwok's stages
    # leave them alone once they have an IP): it runs one server per container
    # start, with probes, restarts and graceful deletion (kubelet.py).
    init_runner = None
    if args.empty_dir_root:
        binaries = dict(b.split("=", 1) for b in args.binary)
        init_runner = HostInitRunner(lookup, args.empty_dir_root, binaries)
    supervisor = PodKubelets(
        PodApi(api),
        standin_factory(runtime, lookup, args.empty_dir_root),
        init_runner=init_runner,
    )

    def in_loop(fn: Callable[..., None], *fn_args: Any) -> None:
        loop.call_soon_threadsafe(fn, *fn_args)

    watchers = [
        Watcher(
            "configmaps",
            api.list_config_map_for_all_namespaces,
            on_resync=lookup.configmaps_resync,
            on_event=lookup.configmaps_event,
        ),
        Watcher(
            "pods",
            api.list_pod_for_all_namespaces,
            on_resync=lambda pods: in_loop(supervisor.resync, pods),
            on_event=lambda kind, pod: in_loop(supervisor.event, kind, pod),
            label_selector=SERVED_MODEL_LABEL,
        ),
    ]
    for watcher in watchers:
        watcher.start()
    log.info("stand-in model server up: watching pods labelled %s", SERVED_MODEL_LABEL)
    await stop.wait()
    log.info("shutting down")
    for watcher in watchers:
        watcher.stop()
    try:
        await asyncio.wait_for(supervisor.stop_all(), timeout=3.0)
    except TimeoutError:
        log.warning("some pod servers did not stop in time")
    runtime.shutdown()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kubernetes", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # A SavedModel load in a worker thread cannot be interrupted, and
    # TensorFlow's teardown at interpreter exit can take seconds: leave now,
    # everything that matters (listeners, watches) is closed already.
    os._exit(status)
