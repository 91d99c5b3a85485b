"""API write requests, counted by the API server itself (`apiserver_request_total`).

The metric has no client label, so writes are attributed per resource: only
the operator writes ServedModels, server-side-applies Deployments, Services
and ConfigMaps (verb APPLY), and deletes ConfigMaps; Events and pod status
patches come from the operator *and* from kwok/the controllers, so those are
split by looking at the objects themselves (see idle.py). Dry-run requests
are counted apart: they persist nothing but still cost the API server.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from benchmarks.kubeapi import Api

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, order=True)
class RequestKey:
    """One series of apiserver_request_total, without the code and version labels."""

    verb: str
    group: str
    resource: str
    subresource: str
    dry_run: bool

    @property
    def target(self) -> str:
        """e.g. "deployments.apps/status"."""
        name = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{name}/{self.subresource}" if self.subresource else name


Snapshot = Counter[RequestKey]


def snapshot(api: Api) -> Snapshot:
    """Current totals of every write series."""
    totals: Snapshot = Counter()
    for line in api.text("/metrics").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        verb = labels.get("verb", "")
        if verb not in WRITE_VERBS or not labels.get("resource"):
            continue
        key = RequestKey(
            verb=verb,
            group=labels.get("group", ""),
            resource=labels["resource"],
            subresource=labels.get("subresource", ""),
            dry_run=bool(labels.get("dry_run")),
        )
        totals[key] += int(float(match["value"]))
    return totals


def diff(before: Snapshot, after: Snapshot) -> Snapshot:
    """Requests made between two snapshots (series with zero left out)."""
    delta: Snapshot = Counter()
    for key, value in after.items():
        change = value - before.get(key, 0)
        if change:
            delta[key] = change
    return delta


# Server-side apply and deletes of these kinds: the operator's (kube controllers
# use update/patch, kwok touches pods and nodes only).
OPERATOR_APPLIED = {
    "deployments",
    "services",
    "configmaps",
    "poddisruptionbudgets",
    "networkpolicies",
}


def is_operators(key: RequestKey) -> bool | None:
    """True: certainly the operator; False: certainly not; None: shared (events, pods/status)."""
    if key.resource == "servedmodels":
        return True
    if key.resource in OPERATOR_APPLIED and not key.subresource:
        if key.verb == "APPLY":
            return True
        return key.verb == "DELETE" and key.resource == "configmaps"
    if key.resource == "events" and key.verb != "POST":
        return False  # the operator only creates Events; kwok and controllers patch theirs
    if key.resource == "events" or (key.resource == "pods" and key.subresource == "status"):
        return None
    return False


def table(delta: Snapshot) -> list[dict[str, object]]:
    """Rows for the report: verb, target, dry run, count, whose."""
    rows = []
    for key in sorted(delta):
        owner = is_operators(key)
        rows.append(
            {
                "verb": key.verb,
                "target": key.target,
                "dry_run": key.dry_run,
                "count": delta[key],
                "by": {True: "operator", False: "others", None: "shared"}[owner],
            }
        )
    return rows


def operator_writes(delta: Snapshot) -> int:
    """Persisted writes certainly made by the operator (dry runs excluded)."""
    return sum(v for k, v in delta.items() if not k.dry_run and is_operators(k) is True)


def dry_runs(delta: Snapshot) -> int:
    return sum(v for k, v in delta.items() if k.dry_run)


def count(delta: Snapshot, resource: str, verb: str | None = None, dry_run: bool = False) -> int:
    return sum(
        v
        for k, v in delta.items()
        if k.resource == resource and k.dry_run == dry_run and (verb is None or k.verb == verb)
    )
