"""Bad model folders, and spec values the operator's own encoding trips on.

Model folders (real folders, served by the stand-in, which loads them with
TensorFlow): empty, only non-numeric names, a half-written version
(variables/ but no saved_model.pb), a `tmp-` folder next to a good version,
an unreadable saved_model.pb. Each must end with a status that explains and
with no broken version served.

Unreadable files: the tests usually run as root, and root reads a chmod 000
file anyway. The test detects that, says so in its result and is skipped;
the unreadable case is then played by a saved_model.pb that is a directory
(EISDIR on read), which no user can read.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localdev.support.k8s import condition, create_sm, get_sm, servedmodel
from localdev.support.models import add_good_version, make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.reliability import results
from tests.reliability.conftest import REL_PREFIX, delete_namespace, make_namespace
from tests.reliability.kubeapi import (
    create_servedmodel_strictly,
    dry_apply,
    dry_create_servedmodel,
)
from tfserving_operator import render, spec
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

pytestmark = pytest.mark.cluster

AVAILABILITY_TIMEOUT = 10


@dataclass
class Folders:
    api: Any
    namespace: str
    root: Path

    def create(self, name: str, base: Path, **spec_fields: Any) -> None:
        body = {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(base)}},
            "rollout": {"availabilityTimeoutSeconds": AVAILABILITY_TIMEOUT},
            "fileSystemPollWaitSeconds": 1,
            **spec_fields,
        }
        create_sm(self.api, self.namespace, servedmodel(name, body))

    def folder(self, name: str) -> Path:
        path = self.root / "cases" / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


@pytest.fixture(scope="module")
def folders(api_client: Any, model_store: Path, sim: Any, crds: None) -> Iterator[Folders]:
    namespace = make_namespace(api_client)
    log = sim.state_dir / "logs" / f"operator-{REL_PREFIX}-folders.log"
    # Servers whose gate is open are asked again every 2 s, not 30: a version
    # appearing next to a serving one shows in the status quickly.
    env = {"TFSO_PROBE_INTERVAL_SECONDS": "2"}
    operator = OperatorProcess(sim.kubeconfig, namespace, log, env=env).start()
    yield Folders(api_client, namespace, model_store)
    operator.stop()
    delete_namespace(api_client, namespace)


def _explained(body: dict[str, Any], words: tuple[str, ...]) -> bool:
    """Ready False, Degraded True, and a condition message naming the cause."""
    ready, degraded = condition(body, "Ready"), condition(body, "Degraded")
    messages = f"{ready.get('message', '')} {degraded.get('message', '')}"
    return (
        ready.get("status") == "False"
        and degraded.get("status") == "True"
        and any(w in messages for w in words)
    )


def _serving(body: dict[str, Any]) -> str:
    return str((body.get("status") or {}).get("servingVersions", ""))


def _if_explained(f: Folders, name: str, words: tuple[str, ...]) -> dict[str, Any] | None:
    """The ServedModel once its status explains the failure with one of `words`."""
    body: dict[str, Any] = get_sm(f.api, f.namespace, name)
    return body if _explained(body, words) else None


def _status_text(f: Folders, name: str) -> str:
    return str(get_sm(f.api, f.namespace, name).get("status"))[:1500]


def test_bad_model_folders(folders: Folders) -> None:
    f = folders
    cases: dict[str, tuple[str, tuple[str, ...], str]] = {}
    # name -> (what, words the status must use, versions that may serve)

    # No version folder at all: the real server waits for one with its ports
    # closed (tensorflow/serving#1693), so the availability timeout explains it.
    never = ("VersionLoadTimeout", "ServerUnreachable")
    empty = f.folder("empty")
    f.create("empty-pinned", empty, version=1)
    f.create("empty-latest", empty)
    cases["empty-pinned"] = ("empty folder, version pinned", never, "")
    cases["empty-latest"] = ("empty folder, latest policy", never, "")

    names = f.folder("names")
    for child in ("v1", "latest", "model"):
        add_good_version(f.root, names, 0)
        (names / "0").rename(names / child)
    f.create("non-numeric", names)
    cases["non-numeric"] = ("only non-numeric folder names", never, "")

    half = make_model_dir(f.root, "half", good=(1,))
    (half / "2" / "variables").mkdir(parents=True)
    f.create("half-pinned", half, version=2)
    f.create("half-latest", half)
    missing = ("SavedModel file does not exist", "VersionLoadFailed")
    cases["half-pinned"] = (
        "half-written version (variables/, no saved_model.pb), pinned",
        missing,
        "",
    )
    cases["half-latest"] = ("half-written highest version, latest policy", missing, "")

    unreadable = f.folder("unreadable")
    (unreadable / "1" / "variables").mkdir(parents=True)
    (unreadable / "1" / "saved_model.pb").mkdir()  # reading it fails with EISDIR
    f.create("unreadable", unreadable, version=1)
    cases["unreadable"] = (
        "saved_model.pb unreadable (a directory: EISDIR)",
        ("Is a directory",),
        "",
    )

    failures: list[str] = []
    for name, (what, words, allowed) in cases.items():
        try:
            body = wait_until(
                functools.partial(_if_explained, f, name, words),
                timeout=AVAILABILITY_TIMEOUT + 30,
                what=f"{name}: Ready False, Degraded True, naming {words}",
                describe=functools.partial(_status_text, f, name),
            )
            if _serving(body) != allowed:
                failures.append(f"{name}: serving {_serving(body)!r} ({what})")
        except AssertionError as err:
            failures.append(f"{name} ({what}): {err}")

    # A tmp- folder next to a good version is not a version.
    tmp = make_model_dir(f.root, "tmp", good=(1,))
    (tmp / "tmp-3" / "variables").mkdir(parents=True)
    (tmp / ".4").mkdir()
    f.create("tmp-folder", tmp)
    try:
        wait_until(
            lambda: (
                condition(b := get_sm(f.api, f.namespace, "tmp-folder"), "Ready").get("status")
                == "True"
                and _serving(b) == "1"
            ),
            timeout=60,
            what="tmp-folder: Ready, serving 1 only",
        )
    except AssertionError as err:
        failures.append(f"tmp-folder: {err}")

    for name, (what, _, _) in {
        **cases,
        "tmp-folder": ("tmp-3 and .4 next to version 1", (), ""),
    }.items():
        ok = not any(x.startswith(f"{name}:") or x.startswith(f"{name} (") for x in failures)
        results.record(
            f"model-folder-{name}",
            "Bad input",
            f"Model folder: {what}",
            1,
            1 if ok else 0,
            "serves 1, ignores them" if name == "tmp-folder" else "status explains, nothing served",
            suite="make test",
        )
    assert not failures, "\n".join(failures)


def test_chmod_000_under_root_is_reported_not_assumed(folders: Folders) -> None:
    """A chmod 000 saved_model.pb: unreadable for the model server's UID 1000 in a
    real pod. These tests usually run as root, who reads it anyway: then the case
    cannot be played here, and the test is skipped (not passed); the EISDIR case
    plays the unreadable file instead."""
    base = make_model_dir(folders.root, "chmod", good=(1,))
    pb = base / "1" / "saved_model.pb"
    os.chmod(pb, 0)
    try:
        if _readable(pb):
            results.record(
                "model-folder-chmod-000",
                "Bad input",
                "Model folder: saved_model.pb with mode 000",
                0,
                0,
                "not testable as root (root reads mode 000); played by the EISDIR case",
                suite="make test",
                figures={"tests run as root": True},
            )
            pytest.skip("running as root, who reads a mode 000 file: played by the EISDIR case")
        folders.create("chmod-000", base, version=1)
        wait_until(
            lambda: _explained(
                get_sm(folders.api, folders.namespace, "chmod-000"), ("Permission denied",)
            ),
            timeout=AVAILABILITY_TIMEOUT + 30,
            what="chmod-000: status names the permission error",
        )
    finally:
        os.chmod(pb, 0o644)  # leave the shared model store removable by anyone
    results.record(
        "model-folder-chmod-000",
        "Bad input",
        "Model folder: saved_model.pb with mode 000",
        1,
        1,
        "status explains, nothing served",
        suite="make test",
        figures={"tests run as root": False},
    )


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        return False
    return True


@pytest.fixture(scope="module")
def half_written_next_to_serving(folders: Folders) -> dict[str, Any]:
    """A ServedModel (latest policy) serving 1, then a half-written 2 appears."""
    base = make_model_dir(folders.root, "live-half", good=(1,))
    folders.create("live-half", base)
    wait_until(
        lambda: _serving(get_sm(folders.api, folders.namespace, "live-half")) == "1",
        timeout=60,
        what="live-half serving 1",
    )
    (base / "2" / "variables").mkdir(parents=True)

    def failed_load_seen() -> dict[str, Any] | None:
        body = get_sm(folders.api, folders.namespace, "live-half")
        for pod in (body.get("status") or {}).get("pods") or []:
            for version in pod.get("versions") or []:
                if version.get("version") == 2 and version.get("state") == "END":
                    return body
        return None

    body: dict[str, Any] = wait_until(
        failed_load_seen, timeout=30, what="version 2's failed load in status.pods"
    )
    return body


def test_half_written_version_next_to_a_serving_one_is_not_served(
    half_written_next_to_serving: dict[str, Any],
) -> None:
    """The availability-preserving policy keeps 1 serving; 2 never takes traffic."""
    body = half_written_next_to_serving
    ok = _serving(body) == "1" and condition(body, "Ready").get("status") == "True"
    results.record(
        "model-folder-half-written-live",
        "Bad input",
        "Model folder: a half-written version 2 appears next to serving version 1 (latest policy)",
        1,
        1 if ok else 0,
        "1 keeps serving; 2's load error in status.pods[].versions",
        suite="make test",
    )
    assert ok, body.get("status")


def test_half_written_version_next_to_a_serving_one_is_reported(
    half_written_next_to_serving: dict[str, Any],
) -> None:
    body = half_written_next_to_serving
    degraded = condition(body, "Degraded")
    reported = degraded.get("status") == "True" and "2" in degraded.get("message", "")
    results.record(
        "model-folder-half-written-live-condition",
        "Bad input",
        "Same: a condition says version 2 failed to load",
        1,
        1 if reported else 0,
        "Degraded names version 2" if reported else "conditions silent (Ready, not Degraded)",
        suite="make test",
        bug="" if reported else "failed newer version under latest policy not in conditions",
    )
    assert reported, degraded


def test_characters_beyond_the_bmp_reach_the_children(api_client: Any, folders: Folders) -> None:
    """An annotation value with an emoji is valid Kubernetes: the children must be admitted."""
    candidate = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": "/tmp"}},
        "version": 1,
        "podAnnotations": {"example.com/note": "launch \U0001f680"},
    }
    status, body = dry_create_servedmodel(api_client, folders.namespace, "emoji", candidate)
    assert status < 400, body
    children = render.render(
        spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE), spec.target_versions(candidate)
    )
    refused = []
    for manifest in children.all():
        code, answer = dry_apply(api_client, manifest)
        if code >= 400:
            refused.append(f"{manifest['kind']}: {answer.get('message')}")
    results.record(
        "spec-non-bmp-characters",
        "Bad input",
        "A spec value with a character beyond U+FFFF (an emoji in a pod annotation)",
        1,
        0 if refused else 1,
        "children admitted" if not refused else "children refused: YAML decoding of the apply body",
        suite="make test",
        bug="apply bodies escape non-BMP characters as surrogates" if refused else "",
    )
    assert not refused, refused


# Specs whose Deployment or NetworkPolicy server-side apply cannot even
# type-check (HTTP 500 "failed to create typed patch object"). The CRD carries
# Kubernetes' own schemas for these fields, so most are refused at admission,
# as kubectl sends them (fieldValidation=Strict); what only the rendered
# children reveal (an env name the operator sets itself) gets InvalidSpec.
SSA_REFUSED: dict[str, dict[str, Any]] = {
    "dup-env": {"env": [{"name": "MODE", "value": "a"}, {"name": "MODE", "value": "b"}]},
    "dup-pull-secrets": {"imagePullSecrets": [{"name": "registry"}, {"name": "registry"}]},
    "env-unknown-field": {"env": [{"name": "MODE", "valu": "typo"}]},
    "affinity-wrong-type": {"affinity": {"nodeAffinity": ["zone-a"]}},
    "selector-unknown-field": {"networkPolicy": {"clientSelector": {"matchLabel": {"a": "b"}}}},
}
REFUSED_AT_ADMISSION = {
    "dup-env",
    "dup-pull-secrets",
    "env-unknown-field",
    "affinity-wrong-type",
    "selector-unknown-field",
}


def test_server_side_apply_refusals_are_refused_or_get_a_status(folders: Folders) -> None:
    admission: dict[str, str] = {}
    for name, fields in SSA_REFUSED.items():
        candidate = {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": "/tmp"}},
            "version": 1,
            "replicas": 0,
            **fields,
        }
        code, answer = create_servedmodel_strictly(folders.api, folders.namespace, name, candidate)
        if code >= 400:
            admission[name] = str(answer.get("message", answer))

    def invalid(name: str) -> bool:
        ready = condition(get_sm(folders.api, folders.namespace, name), "Ready")
        return ready.get("status") == "False" and ready.get("reason") == "InvalidSpec"

    admitted = [name for name in SSA_REFUSED if name not in admission]
    stuck: list[str] = []
    for name in admitted:
        try:
            wait_until(
                functools.partial(invalid, name), timeout=20, what=f"{name}: Ready/InvalidSpec"
            )
        except AssertionError:
            stuck.append(name)
    results.record(
        "spec-ssa-type-errors",
        "Bad input",
        "Specs server-side apply cannot type-check: repeated env and imagePullSecrets "
        "names, env AWS_REGION next to s3 credentials, an unknown env field, a wrongly "
        "typed affinity, an unknown selector field",
        len(SSA_REFUSED),
        len(SSA_REFUSED) - len(stuck),
        f"{len(admission)} refused at admission (Kubernetes' own schemas in the CRD), "
        f"{len(admitted) - len(stuck)} InvalidSpec"
        + (f", no status for {len(stuck)}" if stuck else ""),
        suite="make test",
        bug="apply fails with HTTP 500, retried forever, no status" if stuck else "",
    )
    assert not stuck, stuck
    assert set(admission) == REFUSED_AT_ADMISSION, admission
    assert "Duplicate value" in admission["dup-env"], admission["dup-env"]
    assert 'unknown field "spec.env[0].valu"' in admission["env-unknown-field"]
