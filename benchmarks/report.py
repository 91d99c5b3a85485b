"""Results as JSON and as the Markdown that docs/benchmarks.md quotes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write <stem>.json and <stem>.md; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def markdown(results: dict[str, Any]) -> str:
    """The printed figures, one section per benchmark."""
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['started']} ({'quick' if results['quick'] else 'full'} mode, "
        f"{results['duration_seconds']:.0f} s), cluster instance {results['instance']}.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['nproc']} x {m['cpu_model']}",
        f"- memory: {m['mem_total_gib']} GiB; kernel {m['kernel']}; Python {m['python']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}"
        f"; at end: {', '.join(f'{x:.2f}' for x in results.get('loadavg_at_end', []))}",
        "",
        "```",
        m["free_g"],
        "```",
        "",
    ]
    tp = results.get("throughput")
    if tp:
        lines += [
            "## 1. Throughput (replicas 0)",
            "",
            "Seconds from the first create request until every ServedModel had its "
            "Deployment, 3 Services and ConfigMap (owner references set) and "
            "`status.observedGeneration == generation`; medians over the runs.",
            "",
            *_table(
                [
                    "N",
                    "runs",
                    "all applied (s)",
                    "floor (s)",
                    "operator / floor",
                    "requests per ServedModel",
                    "per s",
                    "p50 / p90 per object (s)",
                    "operator CPU (s)",
                    "operator RSS (MiB)",
                    "peak RSS (MiB)",
                ],
                [
                    [
                        s["n"],
                        s["runs"] - s["timed_out"],
                        s["applied_seconds_median"],
                        s.get("floor_applied_seconds_median"),
                        s.get("floor_ratio_median"),
                        s.get("requests_per_servedmodel_median"),
                        s["applied_per_second"],
                        f"{s['latency_p50_median']} / {s['latency_p90_median']}",
                        s["operator_cpu_seconds_median"],
                        s["operator_rss_mib_median"],
                        s["operator_peak_rss_mib_max"],
                    ]
                    for s in tp["summary"]
                ],
            ),
            "",
            "The floor (benchmarks/floor.py): a bare client with the operator's request "
            "concurrency (16) writing only what the operator must (the rendered children by "
            "server-side apply, one status patch each) for the same N, created and timed the "
            "same way, just before the operator's run on the same instance.",
            "",
            "Each run (CPU seconds of every process over the run, requests the operator made):",
            "",
            *_table(
                ["N", "applied (s)", "settled (s)", "CPU split (s)", "requests"],
                [
                    [
                        r["n"],
                        r["applied_seconds"],
                        r["settled_seconds"],
                        ", ".join(f"{k} {v}" for k, v in r["cpu_split"].items()),
                        ", ".join(f"{k} {v}" for k, v in r["requests"].items()),
                    ]
                    for r in tp["runs"]
                ],
            ),
            "",
        ]
    changed = results.get("changed_version")
    if changed and "per_change" in changed:
        lines += [
            "## 1b. Requests per changed version",
            "",
            f"{changed['changed']} converged ServedModels (replicas 0) moved to another "
            f"version: **{changed['per_change']} requests each** "
            f"({', '.join(f'{k} {v}' for k, v in changed['requests'].items())}); all settled "
            f"after {changed['settled_seconds']} s.",
            "",
        ]
    for key, title in (("idle", "2. Idle cost"), ("probe_load_idle", "2b. Idle cost with pods")):
        idle = results.get(key)
        if not idle:
            continue
        lines += [
            f"## {title}",
            "",
            f"{idle['servedmodels']} ServedModels ({idle['pods']} pods), "
            f"{idle['window_seconds']} s of steady state: **{idle['operator_writes']} "
            f"writes by the operator** ({idle['operator_writes_by_kind']}), "
            f"{idle['operator_dry_runs']} dry runs, {idle['others_writes']} writes by "
            f"others; operator CPU {idle['operator_cpu_seconds']} s "
            f"({idle['operator_cpu_percent_of_core']} % of a core), RSS "
            f"{idle['operator_rss_mib_start']} -> {idle['operator_rss_mib_end']} MiB.",
            "",
            *_table(
                ["verb", "resource", "dry run", "count", "by"],
                [
                    [r["verb"], r["target"], r["dry_run"], r["count"], r["by"]]
                    for r in idle["writes_table"]
                ],
            ),
            "",
        ]
    mem = results.get("memory")
    if mem:
        lines += [
            "## 3. Operator memory and CPU",
            "",
            *_table(["figure", "value"], [[k, v] for k, v in mem.items()]),
            "",
        ]
    st = results.get("startup")
    if st:
        lines += ["## 4. Start-up", ""]
        if st.get("warm_restarts"):
            lines += [
                "Warm restart (nothing changed while the operator was down):",
                "",
                *_table(
                    [
                        "N",
                        "healthz (s)",
                        "first request (s)",
                        "all dry runs (s)",
                        "CPU quiet (s)",
                        "CPU (s)",
                        "writes",
                        "dry runs",
                    ],
                    [
                        [
                            w["servedmodels"],
                            w["healthz_seconds"],
                            w["first_request_seconds"],
                            w["all_dry_runs_seconds"],
                            w["cpu_quiet_seconds"],
                            w["operator_cpu_seconds"],
                            w["operator_writes"],
                            w["operator_dry_runs"],
                        ]
                        for w in st["warm_restarts"]
                    ],
                ),
                "",
            ]
        if st.get("changed_while_down"):
            c = st["changed_while_down"]
            lines += [
                f"Changed while down: {c['changed']} of {c['servedmodels']} edited; first "
                f"write {c['first_write_seconds']} s, all {c['changed']} re-applied "
                f"{c['all_changed_applied_seconds']} s after the process started.",
                "",
            ]
        if st.get("cold_starts"):
            lines += [
                "Cold start (ServedModels created before any operator ran):",
                "",
                *_table(
                    ["N", "healthz (s)", "first write (s)", "all applied (s)", "CPU (s)", "RSS"],
                    [
                        [
                            c["servedmodels"],
                            c["healthz_seconds"],
                            c["first_write_seconds"],
                            c["all_applied_seconds"],
                            c["operator_cpu_seconds"],
                            c["operator_rss_mib"],
                        ]
                        for c in st["cold_starts"]
                    ],
                ),
                "",
            ]
    gate = results.get("gate_latency")
    if gate:
        lines += ["## 5. Gate latency", ""]
        if "error" in gate:
            lines += [f"Not measured: {gate['error']}", ""]
        else:
            lines += [
                "Version AVAILABLE on a pod's server -> pod Ready "
                f"({gate['samples']:.0f} pods): median {gate['median']:.3f} s, "
                f"p90 {gate['p90']:.3f} s, p99 {gate.get('p99', gate['max']):.3f} s, "
                f"max {gate['max']:.3f} s; "
                f"{gate.get('probes_per_pod', '?')} probes per pod.",
                "",
                *(
                    [
                        "The operator's share, version AVAILABLE -> availability gate "
                        f"True: median {gate['gate_only']['median']:.3f} s, "
                        f"p99 {gate['gate_only']['p99']:.3f} s. The rest is the kubelet's "
                        "startup probe (every second): a pod is Ready once both agree.",
                    ]
                    if "gate_only" in gate
                    else []
                ),
                "",
            ]
    probe = results.get("probe_load")
    if probe:
        lines += ["## 6. Probe load", ""]
        if "calls_per_server_per_minute" in probe:
            lines += [
                f"{probe['servedmodels']} one-replica ServedModels (stand-in model server), "
                f"all Ready {probe['all_ready_seconds']} s after the first create. "
                f"Steady state: **{probe['calls_per_server_per_minute']} GetModelStatus "
                f"calls per server per minute** ({probe['probe_calls']} calls in "
                f"{probe['probe_window_seconds']} s; probe interval "
                f"{probe['probe_interval_seconds']} s); operator RSS "
                f"{probe['operator_rss_mib']} MiB.",
                "",
            ]
        else:
            lines += [f"Not every ServedModel became Ready: {probe}", ""]
    loaded = results.get("gate_under_load")
    if loaded:
        lines += ["## 7. Gate under Predict load", ""]
        if "error" in loaded:
            lines += [f"Not measured: {loaded['error']}", ""]
        else:
            lines += [
                f"{loaded['replicas']} replicas with `--grpc_max_threads="
                f"{loaded['grpc_max_threads']}`, {loaded['predict_workers']} closed-loop "
                "Predict workers, the operator probing every second.",
                "",
                *_table(
                    [
                        "scenario",
                        "probe timeout (s)",
                        "threshold",
                        "gate flaps",
                        "probe p50 / p99 / max (ms)",
                        "timeouts / probes",
                        "Predicts (failed)",
                    ],
                    [
                        [
                            key,
                            run["probe_timeout_seconds"],
                            run["failure_threshold"],
                            run["gate_flaps"],
                            f"{run['probe_p50_ms']} / {run['probe_p99_ms']} / "
                            f"{run['probe_max_ms']}",
                            f"{run['probe_timeouts']} / {run['probes']}",
                            f"{run['predicts']} ({run['predict_failures']})",
                        ]
                        for key, run in loaded.items()
                        if isinstance(run, dict) and "gate_flaps" in run
                    ],
                ),
                "",
            ]
    peer = results.get("peer")
    if peer and "summary" in peer:
        lines += [
            f"## 9. Side by side with KServe {peer['kserve_version']} (benchmarks/peer.py)",
            "",
            "Same instance, same N, zero replicas, created by 8 threads, alternating runs. "
            "Ready: KServe's InferenceService Ready condition (Deployment and Service "
            "exist, the Deployment is Available; nothing asks a model server); ours: the "
            "ServedModel's Ready for its generation (five children applied). Requests: each "
            "client's own count (KServe: every request of its client, reads included; ours: "
            "every request of its transport and child streams, kopf's ServedModel list and "
            "watch not included).",
            "",
            *_table(
                [
                    "N",
                    "ours ready (s)",
                    "KServe ready (s)",
                    "ours / KServe",
                    "RSS ours / KServe (MiB)",
                    "requests per model ours / KServe",
                ],
                [
                    [
                        r["n"],
                        r["ours_ready_seconds"],
                        r["kserve_ready_seconds"],
                        r.get("time_ratio"),
                        f"{r['ours_rss_mib']} / {r['kserve_rss_mib']}",
                        f"{r['ours_requests_per_model']} / {r['kserve_requests_per_model']}",
                    ]
                    for r in peer["summary"]
                ],
            ),
            "",
        ]
    return "\n".join(lines) + "\n"
