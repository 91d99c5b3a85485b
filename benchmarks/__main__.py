"""`make bench` (= `python -m benchmarks`): every benchmark, on a cluster instance of its own.

Starts local cluster instance 1 (other ports, pod range and state folder
than the developers' instance 0, ten roomy kwok nodes), runs the benchmarks
in order, prints each figure as it comes, writes
benchmarks/results/latest.{md,json} and stops the instance. It refuses an
instance that is already up or that another process points at (guard.py),
and stops everything it started when interrupted (SIGINT, SIGTERM).
`--quick` runs every benchmark small and short (a test runs it) and writes
results/quick.{md,json} instead. No figure is a pass/fail verdict: the exit
status is 0 whatever the figures say.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    gate_under_load,
    guard,
    idle,
    machine,
    peer,
    probe_load,
    report,
    startup,
    throughput,
    workload,
)
from benchmarks.harness import DEFAULT_INSTANCE, Bench, median, say
from benchmarks.runner import start_operator

RESULTS_DIR = Path(__file__).with_name("results")
SECTIONS = (
    "throughput",
    "idle",
    "startup",
    "probe_load",
    "gate_latency",
    "gate_under_load",
    "peer",
)
# Sections run after the throughput run's namespace is done with.
LATER_SECTIONS = frozenset({"probe_load", "gate_latency", "gate_under_load", "peer"})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, short windows (~2 min)")
    parser.add_argument("--instance", type=int, default=DEFAULT_INSTANCE, help="cluster instance")
    parser.add_argument("--sizes", help="ServedModel counts, e.g. 100,500,1000")
    parser.add_argument("--repeats", type=int, help="runs per size (the median is reported)")
    parser.add_argument("--idle-seconds", type=float, help="steady-state window (default 300)")
    parser.add_argument("--probe-servedmodels", type=int, help="one-replica ServedModels")
    parser.add_argument("--probe-window", type=float, help="probe-load window in seconds")
    parser.add_argument("--gate-samples", type=int, help="pods measured for gate latency")
    parser.add_argument("--load-window", type=float, help="seconds of Predict load per scenario")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the floor client's runs (floor.py)"
    )
    parser.add_argument(
        "--with-5000", action="store_true", help="add N=5000 to the sizes (slow: ~15 min more)"
    )
    parser.add_argument("--changed", type=int, help="ServedModels whose version is changed")
    parser.add_argument("--peer-sizes", help="N for the KServe comparison (default 300,1000)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [20] if quick else [100, 1000]
    )  # fmt: skip
    if args.with_5000 and 5000 not in args.sizes:
        args.sizes.append(5000)
    args.changed = args.changed or (2 if quick else 20)
    args.peer_sizes = [int(x) for x in args.peer_sizes.split(",")] if args.peer_sizes else (
        [20] if quick else [300, 1000]
    )  # fmt: skip
    args.repeats = args.repeats or (1 if quick else 3)
    args.idle_seconds = args.idle_seconds if args.idle_seconds is not None else (
        10.0 if quick else 300.0
    )  # fmt: skip
    args.probe_servedmodels = args.probe_servedmodels or (2 if quick else 50)
    args.probe_window = args.probe_window or (10.0 if quick else 180.0)
    args.gate_samples = args.gate_samples or (2 if quick else 20)
    args.load_window = args.load_window or (10.0 if quick else 60.0)
    args.only = set(args.only.split(",")) if args.only else set(SECTIONS)
    args.out = args.out or RESULTS_DIR
    return args


def _section(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one benchmark; a failure is recorded in the results, never fatal."""
    started = time.monotonic()
    try:
        value = fn()
    except Exception as err:
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
        say(f"{name} failed: {err}")
        return None
    say(f"{name} done in {time.monotonic() - started:.0f} s")
    return value


def gate_latency(bench: Bench, samples: int) -> dict[str, Any]:
    """The gated-rollout benchmark (benchmarks/gate_latency.py), with this run's cluster."""
    try:
        from benchmarks import gate_latency as gate
    except ImportError as err:
        return {"error": f"benchmarks/gate_latency.py not importable: {err}"}
    from kubernetes import config

    bench.with_standin()
    namespace = workload.create_namespace(bench.api, prefix="bench-gate")
    api_client = config.new_client_from_config(config_file=str(bench.cluster.kubeconfig))
    operator = start_operator(bench.cluster, f"gate-{uuid.uuid4().hex[:4]}")
    try:
        run = gate.measure_gate_latency(api_client, namespace, workload.MODELS_ROOT, samples)
        # The only pods in the cluster now are these rounds': every probe was of them.
        probes = int(operator.process.health_since(time.time())["probe_calls"])
    finally:
        operator.stop()
        api_client.close()
        workload.delete_namespace(bench.api, namespace)
    figures: dict[str, Any] = dict(gate.summarize(run.latencies))
    figures["latencies"] = [round(x, 3) for x in run.latencies]
    figures["probes_per_pod"] = round(probes / run.pods, 1)
    figures["gate_only"] = gate.summarize(run.gate_latencies)
    figures["gate_latencies"] = [round(x, 3) for x in run.gate_latencies]
    say(
        f"gate latency: median {figures['median']:.3f} s, p90 {figures['p90']:.3f} s, "
        f"p99 {figures['p99']:.3f} s; {figures['probes_per_pod']} probes per pod; "
        f"AVAILABLE -> gate True alone: median {figures['gate_only']['median']:.3f} s, "
        f"p99 {figures['gate_only']['p99']:.3f} s"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Everything the run starts (the cluster instance, operators) is stopped on the
    # way out, on Ctrl-C and SIGTERM too.
    with guard.interruptible():
        try:
            return _run(args)
        except guard.Refused as err:
            say(f"refusing to run: {err}")
            return 2


def _run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "instance": args.instance,
        "parameters": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "idle_seconds": args.idle_seconds,
            "probe_servedmodels": args.probe_servedmodels,
            "probe_window": args.probe_window,
            "gate_samples": args.gate_samples,
            "load_window": args.load_window,
        },
    }
    say(f"starting cluster instance {args.instance}")
    model_base = workload.model_base_path()
    bench = Bench.up(args.instance, standin=False, model_base=model_base, quick=args.quick)
    results["machine"] = machine.describe(bench.api)
    live = None
    try:
        if "throughput" in args.only or "idle" in args.only or "startup" in args.only:
            sizes = args.sizes if "throughput" in args.only else args.sizes[-1:]
            repeats = args.repeats if "throughput" in args.only else 1
            out = _section(
                results,
                "throughput",
                lambda: throughput.run(
                    bench, sizes, repeats, replicas=0, with_floor=not args.no_floor
                ),
            )
            if out is not None:
                results["throughput"], live = out
        if live is not None and "idle" in args.only:
            run = live
            results["idle"] = _section(
                results,
                "idle",
                lambda: idle.measure(
                    bench, run.namespace, run.operator, args.idle_seconds, len(run.names)
                ),
            )
        if live is not None and "throughput" in args.only:
            run_ = live
            results["changed_version"] = _section(
                results,
                "changed_version",
                lambda: throughput.changed_version(bench, run_, min(args.changed, len(run_.names))),
            )
        if live is not None and "startup" in args.only:
            results["startup"] = _section(results, "startup", lambda: _startup(bench, live, args))
        if live is not None:
            live.operator.stop()
            if args.only & LATER_SECTIONS:
                # The instance stops at the end: its objects go with it. Deleting
                # 6 x N objects first took minutes at N=5000 for nothing.
                workload.delete_namespace(bench.api, live.namespace)
        results["memory"] = _memory(results)
        if "probe_load" in args.only:
            probe = _section(
                results,
                "probe_load",
                lambda: probe_load.run(
                    bench,
                    args.probe_servedmodels,
                    args.probe_window,
                    "probe-load",
                    warmup=5 if args.quick else None,
                ),
            )
            if probe is not None:
                results["probe_load_idle"] = probe.pop("idle", None)
                results["probe_load"] = probe
        if "gate_latency" in args.only:
            results["gate_latency"] = _section(
                results, "gate_latency", lambda: gate_latency(bench, args.gate_samples)
            )
        if "gate_under_load" in args.only:
            results["gate_under_load"] = _section(
                results,
                "gate_under_load",
                lambda: gate_under_load.run(bench, args.load_window, args.quick),
            )
        if "peer" in args.only:
            results["peer"] = _section(results, "peer", lambda: peer.run(bench, args.peer_sizes, 1))
    finally:
        results["loadavg_at_end"] = list(os.getloadavg())
        results["duration_seconds"] = round(time.monotonic() - t_start, 1)
        stem = "quick" if args.quick else "latest"
        json_path, md_path = report.write(results, args.out, stem)
    print(md_path.read_text())
    say(f"results: {md_path} and {json_path.name}")
    return 0


def _startup(bench: Bench, live: throughput.LiveRun, args: argparse.Namespace) -> dict[str, Any]:
    warm = [
        startup.warm_restart(bench, live, f"restart-{i + 1}", min_seconds=5 if args.quick else 65)
        for i in range(args.repeats)
    ]
    changed = startup.changed_while_down(bench, live, 2 if args.quick else 10, "changed-while-down")
    live.operator.stop()  # a running cluster-wide operator would take the cold start's objects
    cold = [
        startup.cold_start(bench, args.sizes[-1], 0, f"cold-{i + 1}") for i in range(args.repeats)
    ]
    return {"warm_restarts": warm, "changed_while_down": changed, "cold_starts": cold}


def _memory(results: dict[str, Any]) -> dict[str, Any]:
    """Memory and CPU at the largest N, gathered from the other benchmarks."""
    figures: dict[str, Any] = {}
    tp = results.get("throughput") or {}
    runs = tp.get("runs") or []
    if runs:
        largest = max(r["n"] for r in runs)
        of_n = [r for r in runs if r["n"] == largest]
        figures["N"] = largest
        figures["RSS after convergence, median (MiB)"] = median(r["operator_rss_mib"] for r in of_n)
        figures["peak RSS, max (MiB)"] = max(r["operator_peak_rss_mib"] for r in of_n)
        figures["CPU to converge N, median (s)"] = median(r["operator_cpu_seconds"] for r in of_n)
    idle_figures = results.get("idle") or {}
    if "operator_rss_mib_end" in idle_figures:
        figures["RSS after the idle window (MiB)"] = idle_figures["operator_rss_mib_end"]
        figures["CPU while idle (% of a core)"] = idle_figures["operator_cpu_percent_of_core"]
    cold = ((results.get("startup") or {}).get("cold_starts")) or []
    if cold:
        figures["RSS after a cold start over N, median (MiB)"] = median(
            c["operator_rss_mib"] for c in cold
        )
    return figures


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": True}))
        sys.exit(130)
