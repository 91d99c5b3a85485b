"""The shortest end-to-end path: a ServedModel becomes Ready and serves its version."""

from __future__ import annotations

from localdev.support.k8s import create_sm, servedmodel, wait_condition
from localdev.support.models import make_model_dir


def test_servedmodel_becomes_ready(api_client, namespace, operator, model_store):
    base = make_model_dir(model_store, "smoke", good=(1,))
    spec = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
    }
    create_sm(api_client, namespace, servedmodel("smoke", spec))
    body = wait_condition(api_client, namespace, "smoke", "Ready")
    assert body["status"]["servingVersions"] == "1"
    assert body["status"]["readyReplicas"] == 1
