"""Write docs/reliability.md from the results the reliability tests recorded.

`make chaos` sets TFSO_RELIABILITY_REPORT=docs/reliability.md and the
reliability conftest calls `write_report` when the session ends.

Reads .sim/reliability-results.json (written by tests/reliability/, see
results.py; `make test` fills the bad-input and security rows, `make chaos`
the fault rows) and writes the table. The page carries its rows as JSON in a
closing HTML comment: a row this machine never recorded (the 30-minute
`make soak`, run by hand; or anything on a fresh clone) keeps the one the page
had, with the date it was recorded. Rows never recorded anywhere show as
"not run yet".
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

from tests.reliability.results import RESULTS_FILE, SECTIONS, Result, load, load_raw

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "reliability.md"
# The closing comment that carries the page's rows (see the module docstring).
EMBED = re.compile(r"^<!-- reliability-results (\{.*\}) -->$", re.MULTILINE)

# Every row the suite records, in table order.
EXPECTED = (
    "operator-sigkill-during-create",
    "operator-sigkill-during-update",
    "operator-sigkill-during-rollout",
    "operator-sigkill-during-delete",
    "kube-apiserver-restart",
    "etcd-restart",
    "kube-apiserver-long-outage",
    "model-server-hang",
    "model-server-garbage",
    "model-server-slow",
    "model-server-vanish",
    "model-server-hung-neighbours",
    "model-server-hung-outnumber-slots",
    "probe-isolation-50-hung",
    "two-replicas-peering",
    "soak",
    "spec-properties-admitted",
    "spec-properties-refused",
    "spec-breaks-listed",
    "spec-properties-operator",
    "spec-non-bmp-characters",
    "spec-ssa-type-errors",
    "model-folder-empty-pinned",
    "model-folder-empty-latest",
    "model-folder-non-numeric",
    "model-folder-half-pinned",
    "model-folder-half-latest",
    "model-folder-half-written-live",
    "model-folder-half-written-live-condition",
    "model-folder-tmp-folder",
    "model-folder-unreadable",
    "model-folder-chmod-000",
    "pod-security-restricted",
    "pod-security-hostpath-nfs",
    "pod-security-refusal-in-status",
    "storage-read-only",
    "secret-values",
    "network-policy",
    "network-policy-operator-peer",
)

INTRO = """\
# Reliability and security

What the operator was put through, how often, and how it came out. Every row
is written by a test: `make test` runs the bad-input and security tests,
`make chaos` the long fault tests (`@pytest.mark.chaos`, also run by CI);
each records its row in `.sim/reliability-results.json`, and
`python -m tests.reliability.report` (run by `make chaos`) turns that file
into this page. Don't edit the tables by hand.

A row reading *k/n* came out as expected *k* times out of *n*. A row marked
**known bug** is one where the expected outcome does not hold yet: its test is
marked `xfail(strict=True)` with the cause, so the suite stays green and
flips to a failure (XPASS) the moment the bug is fixed.

How the faults are made:

* **Operator killed**: an operator process of the test's own (watching an
  `r-<hex>-*` namespace) gets SIGKILL at a random moment of a create, an
  update, a delete or a gated rollout (seeded RNG, `TFSO_CHAOS_SEED`; half
  the kills within 0.25 s of the change), is sometimes given a new spec
  while dead, and is restarted. "Converged" means: status current, Ready,
  Progressing False/RolloutComplete, no `status.rollout`; exactly one
  Deployment, the three Services, only ConfigMaps some ReplicaSet uses,
  every pod on the current config with its gate open, nothing owned by an
  older incarnation; after a delete nothing left and nothing coming back.
* **Control plane**: on a separate local cluster (instance 2: own ports, own
  pod range), kube-apiserver or etcd gets SIGKILL while a rollout is in
  flight, stays down 3 s, is started again, and another ServedModel is
  changed right after. "Operator acted" is the time from the API answering
  again to the operator's status naming the new generation; "all converged"
  includes the controller manager, kwok and the stand-in reconnecting.
* **Model servers**: the stand-in model server honours a pod annotation
  `standin.tests.tfoperator.dev/fault: hang | garbage | slow=<s> | vanish`
  (localdev/standin/faults.py): ModelService calls never answer, answer bytes
  that are no protobuf, answer late, or the ports close.
* **Replicas**: two operator processes with kopf peering (`TFSO_PEERING`,
  priorities 200 and 100); which one acts is read from each one's liveness
  endpoint (ServedModel workers, probes sent).
* **Soak**: `make soak SOAK_MINUTES=n` (tests/reliability/soak.py) mixes
  creates, rollouts, refused rollouts, deletes, operator SIGKILLs and
  kube-apiserver restarts at random (seeded) on a cluster of its own
  (instance 5) for the time asked, checks every ServedModel converges after
  every step, and writes its figures to [soak.md](soak.md) and its row here.
* **Bad input**: hypothesis draws specs from the CRD's own schema (the
  structural rules; the CEL rules are repaired most of the time and left
  broken sometimes) and submits them to the API server (dry run); admitted
  ones are parsed and rendered and every child is dry-run applied exactly as
  the operator applies it. Model folders are real folders the stand-in
  loads with TensorFlow.
"""

LIMITS = """\
## What these tests cannot show

* **NetworkPolicy enforcement.** The local cluster has no CNI plugin (kwok
  pods send no packets): the tests check the applied NetworkPolicy's
  selectors, peers and ports, not the traffic.
* **Unreadable files.** The tests run as root, and root reads a mode-000
  file; the unreadable case is played by a `saved_model.pb` that is a
  directory (EISDIR), and the chmod row says whether it could be tested.
* **The real model server.** The stand-in behaves like
  `tensorflow_model_server` where the operator depends on it (states, error
  messages, the availability-preserving policy, a failed version not being
  retried while it stays aspired, ports that open only after the initial
  load, exit 255 when a first version fails), and the stand-in's kubelet
  restarts it with the real back-off; it is still not the real binary
  (localdev/standin/__init__.py lists the differences).
* **Takeover after a crash** depends on kopf's peering lifetime
  (`TFSO_PEERING_LIFETIME_SECONDS`, 10 s by default): a SIGKILLed replica
  counts as alive until its last keep-alive is that old, so the figure
  varies between runs up to about that lifetime.
* **Control-plane figures.** "Operator acted" is the operator's own
  catch-up. "All converged" after an API server restart is dominated by the
  local cluster's kube-controller-manager, which took about 30 s to create
  the new ReplicaSet's pods; kwok also drops pod stages it could not write
  during an outage, so the test touches such pods (a kubelet would retry).
* **An operator starting during an outage.** A running operator outlives a
  60 s API outage (row above). One seen starting while the API was
  unreachable exited after about 55 s, when kopf's namespace observer gave
  up on its first list (an exploratory run, not a test here); its pod would
  be restarted by Kubernetes.
* **Publishing versions.** Copy a version folder under a temporary name
  (`tmp-3`, `.3`: not numeric, so ignored) and rename it when complete. A
  version seen half-written fails to load and, like the real server, the
  stand-in does not retry it while it stays in the folder.
"""


def _figures(result: Result) -> str:
    return "; ".join(
        f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}"
        for k, v in result.figures.items()
        if k != "notes" and v not in ("", None)
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: list[Result], machine: str = "") -> tuple[str, list[str]]:
    """The page, and the expected rows no test has recorded yet."""
    by_key = {r.key: r for r in results}
    order = [k for k in EXPECTED if k in by_key] + sorted(set(by_key) - set(EXPECTED))
    missing = [k for k in EXPECTED if k not in by_key]
    lines = [INTRO]
    if machine:
        lines.append(f"Last recorded on: {machine}.\n")
    for section in SECTIONS:
        rows = [by_key[k] for k in order if by_key[k].section == section]
        lines.append(f"## {section}\n")
        lines.append("| What | Tried | Outcome | Figures | Suite |")
        lines.append("|---|---|---|---|---|")
        for r in rows:
            outcome = f"{r.passed}/{r.tried} {r.outcome}"
            if r.bug:
                outcome += f" — **known bug**: {r.bug}"
            when = f", {r.recorded[:10]}" if r.recorded else ""
            lines.append(
                f"| {_cell(r.title)} | {r.tried} | {_cell(outcome)} | {_cell(_figures(r))} | "
                f"`{r.suite}`{when} |"
            )
        section_missing = [k for k in missing if _section_of(k) == section]
        for key in section_missing:
            lines.append(f"| `{key}` | 0 | not run yet | | |")
        lines.append("")
    bugs = [by_key[k] for k in order if by_key[k].bug]
    if bugs:
        lines.append("## Known bugs these tests hold open\n")
        for r in bugs:
            lines.append(f"* `{r.key}`: {r.bug}.")
        lines.append("")
    lines.append(LIMITS)
    carried_rows = {r.key: asdict(r) for r in results}
    lines.append(f"<!-- reliability-results {json.dumps(carried_rows, sort_keys=True)} -->\n")
    return "\n".join(lines), missing


def carried(page: str) -> list[Result]:
    """The rows a page written by `render` carries ([] for any other text)."""
    match = EMBED.search(page)
    if match is None:
        return []
    known = set(Result.__dataclass_fields__)
    rows = json.loads(match.group(1))
    return [Result(**{k: v for k, v in e.items() if k in known}) for e in rows.values()]


def merged(earlier: list[Result], recorded: list[Result]) -> list[Result]:
    """The page's rows, each replaced by this machine's record of it when there is one."""
    by_key = {r.key: r for r in earlier}
    by_key.update({r.key: r for r in recorded})
    return list(by_key.values())


def _section_of(key: str) -> str:
    if key.startswith(("spec-", "model-folder-")):
        return "Bad input"
    if key.startswith(("pod-security", "storage-", "secret-", "network-")):
        return "Security"
    return "Faults"


def write_report(output: Path = DOC) -> list[str]:
    """Render the page into `output`; return the rows never recorded."""
    earlier = carried(output.read_text()) if output.exists() else []
    page, missing = render(merged(earlier, load()), str(load_raw().get("machine", "")))
    if missing:
        print(
            f"{len(missing)} rows not recorded in {RESULTS_FILE}: {', '.join(missing)}",
            file=sys.stderr,
        )
    output.write_text(page)
    print(f"wrote {output}", file=sys.stderr)
    return missing
