"""Label shards: the watch requests carry the selectors, the children carry the labels."""

from __future__ import annotations

import asyncio

from tests.unit.golden.cases import CASES
from tests.unit.test_watch import FakeApiClient, Recorder
from tfserving_operator import api, render, spec
from tfserving_operator.handlers import servedmodel_watch_selectors
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, Settings
from tfserving_operator.watch import child_watches


def _selectors(settings: Settings) -> dict[str, str]:
    watches = child_watches(
        FakeApiClient(), asyncio.new_event_loop(), Recorder(), (), settings.label_selector_query
    )
    return {s.info.plural: s.selector for s in watches.streams}


def test_unsharded_children_watches_ask_for_our_label_only() -> None:
    selectors = _selectors(Settings())
    assert selectors["pods"] == api.LABEL_SERVEDMODEL
    assert selectors["deployments"] == api.LABEL_SERVEDMODEL
    assert servedmodel_watch_selectors(Settings()) == {}  # every ServedModel


def test_a_shard_watches_only_its_servedmodels_and_their_children() -> None:
    settings = Settings(label_selector={"shard": "a", "team": "x"})
    assert servedmodel_watch_selectors(settings) == {(api.GROUP, api.PLURAL): "shard=a,team=x"}
    selectors = _selectors(settings)
    assert selectors["pods"] == f"{api.LABEL_SERVEDMODEL},shard=a,team=x"
    assert selectors["poddisruptionbudgets"] == selectors["pods"]


def test_the_shard_labels_go_onto_every_child_and_pod_but_not_the_selector() -> None:
    body = CASES["minimal-hostpath"]
    body = {**body, "metadata": {**body["metadata"], "labels": {"shard": "a", "other": "o"}}}
    sm = spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE, carried_label_keys=["shard", "team"])
    assert sm.carried_labels == {"shard": "a"}
    children = render.render(sm, sm.target)
    for manifest in children.all():
        assert manifest["metadata"]["labels"]["shard"] == "a", manifest["kind"]
        assert "other" not in manifest["metadata"]["labels"]
    deployment = children.deployment["spec"]
    assert deployment["template"]["metadata"]["labels"]["shard"] == "a"
    # A Deployment's selector is immutable: it stays as it was.
    assert deployment["selector"]["matchLabels"] == {api.LABEL_SERVEDMODEL: sm.name}


def test_without_a_shard_selector_nothing_is_carried() -> None:
    body = CASES["minimal-hostpath"]
    body = {**body, "metadata": {**body["metadata"], "labels": {"shard": "a"}}}
    sm = spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    assert sm.carried_labels == {}
