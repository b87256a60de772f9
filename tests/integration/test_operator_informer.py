"""The operator's child informer on the real API server: what reconciles read instead of
listing must follow creates, changes and deletions, survive the end of every watch request,
and drop what was deleted while it was not watching."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from snowtrain.operator import children as ch
from snowtrain.operator.index import ChildIndex
from snowtrain.operator.informer import Informer, child_informer
from snowtrain.operator.kube import Kube
from tests.integration.test_operator_ha import _eventually

pytestmark = [pytest.mark.cluster]

OWNER_NAME = "sentiment"


def _job(name: str) -> dict[str, Any]:
    """A Job labelled as a FineTuneJob's attempt; parallelism 0, so it never makes a pod."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {ch.LABEL_JOB: OWNER_NAME, ch.LABEL_KIND: "FineTuneJob"},
        },
        "spec": {
            "parallelism": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }


def test_the_index_follows_jobs_across_watch_requests_and_a_restart(
    kube_api: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(kube_api)
    kube = Kube(kube_api)
    owner = ("FineTuneJob", namespace, OWNER_NAME)
    index = ChildIndex()
    seen: list[tuple[str | None, str]] = []

    def names() -> set[str]:
        return {j["metadata"]["name"] for j in index.children("Job", owner) or []}

    batch.create_namespaced_job(namespace, _job("sentiment-a1"))
    # Watch requests of 2 s: the test sees the informer resume from where each one ended.
    first: Informer = child_informer(
        kube, "Job", namespace, index, lambda t, o: seen.append((t, o["metadata"]["name"])),
        watch_timeout_seconds=2, request_timeout_seconds=10,
    )  # fmt: skip
    thread = first.start()
    _eventually("the first list", lambda: names() == {"sentiment-a1"})
    assert (None, "sentiment-a1") in seen  # listed objects are announced too

    batch.create_namespaced_job(namespace, _job("sentiment-a2"))
    _eventually("a created Job", lambda: names() == {"sentiment-a1", "sentiment-a2"})
    time.sleep(3)  # past the end of the watch request that saw the create
    batch.patch_namespaced_job("sentiment-a2", namespace, {"metadata": {"labels": {"x": "y"}}})
    _eventually(
        "a changed Job",
        lambda: any(
            j["metadata"]["labels"].get("x") == "y" for j in index.children("Job", owner) or []
        ),
    )
    batch.delete_namespaced_job("sentiment-a2", namespace, propagation_policy="Background")
    _eventually("a deleted Job", lambda: names() == {"sentiment-a1"})
    assert ("DELETED", "sentiment-a2") in seen

    first.stop()
    thread.join(timeout=15)
    assert not thread.is_alive()
    # Deleted while nothing watched: no event will ever say so; the next list does.
    batch.delete_namespaced_job("sentiment-a1", namespace, propagation_policy="Background")
    assert names() == {"sentiment-a1"}  # the stopped informer's view: a phantom now
    second = child_informer(kube, "Job", namespace, index, lambda t, o: None)
    second.start()
    _eventually("the phantom dropped by the next list", lambda: names() == set())
    second.stop()
