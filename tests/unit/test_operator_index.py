"""The operator's child index: what reconciles read instead of listing Jobs and pods. It must
never show a reconcile less than a watch-cache list would: not an older version of a child,
not a child whose deletion was seen, and not nothing when it cannot know."""

from __future__ import annotations

from typing import Any

from snowtrain.operator import children as ch
from snowtrain.operator import index, job_events
from snowtrain.operator.index import ChildIndex

OWNER = ("FineTuneJob", "team-a", "sentiment")


def child(
    kind: str, name: str, rv: int, *, uid: str | None = None, attempt: int = 1, **status: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": OWNER[1],
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": {
                ch.LABEL_JOB: OWNER[2],
                ch.LABEL_KIND: OWNER[0],
                ch.LABEL_ATTEMPT: str(attempt),
                ch.LABEL_COMPONENT: ch.COMPONENT_TRAINER,
            },
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "spec": {"parallelism": 1, "template": {"spec": {"containers": [{"name": "trainer"}]}}},
        "status": status,
    }


def primed() -> ChildIndex:
    idx = ChildIndex()
    for kind in ChildIndex.KINDS:
        idx.replace(kind, OWNER[1], [], "1")
    return idx


def test_an_unprimed_namespace_is_not_answered_so_the_reconcile_lists() -> None:
    idx = ChildIndex()
    idx.observe(child("Job", "sentiment-a1", 5))
    assert idx.children("Job", OWNER) is None
    idx.replace("Job", OWNER[1], [], "4")  # the list predates the event: the Job stays
    assert [j["metadata"]["name"] for j in idx.children("Job", OWNER) or []] == ["sentiment-a1"]
    assert idx.children("Pod", OWNER) is None  # pods of the namespace are not listed yet


def test_the_newest_version_wins_whatever_order_it_arrives_in() -> None:
    idx = primed()
    idx.observe(child("Job", "sentiment-a1", 7, active=1))
    idx.observe(child("Job", "sentiment-a1", 6))  # a create's answer after the watch event
    (job,) = idx.children("Job", OWNER) or []
    assert job["status"] == {"active": 1}
    assert job["spec"] == {"parallelism": 1}  # only what reconciles read is kept
    assert "managedFields" not in job["metadata"]


def test_a_deletion_is_final_even_when_a_lagging_list_still_has_the_object() -> None:
    idx = primed()
    idx.observe(child("Pod", "sentiment-a1-x", 3))
    idx.observe(child("Pod", "sentiment-a1-x", 4), deleted=True)
    idx.replace("Pod", OWNER[1], [child("Pod", "sentiment-a1-x", 3)], "3")
    assert idx.children("Pod", OWNER) == []


def test_a_sweep_drops_what_the_watch_missed_but_keeps_what_is_newer_than_the_list() -> None:
    idx = primed()
    idx.observe(child("Job", "sentiment-a1", 5))  # deleted while the watch was down
    idx.observe(child("Job", "sentiment-a2", 9, attempt=2))  # created after the list
    idx.replace("Job", OWNER[1], [], "8")
    names = [j["metadata"]["name"] for j in idx.children("Job", OWNER) or []]
    assert names == ["sentiment-a2"]


def test_children_are_found_by_owner_and_labels_only() -> None:
    idx = primed()
    idx.observe(child("Pod", "sentiment-a1-x", 3))
    idx.observe(child("Pod", "sentiment-a2-y", 4, attempt=2))
    other = child("Pod", "other-a1-z", 5)
    other["metadata"]["labels"][ch.LABEL_JOB] = "other"
    idx.observe(other)
    pods = idx.children("Pod", OWNER, {ch.LABEL_ATTEMPT: "2"}) or []
    assert [p["metadata"]["name"] for p in pods] == ["sentiment-a2-y"]
    assert len(idx) == 3


def test_a_cluster_wide_list_primes_and_sweeps_every_namespace() -> None:
    idx = ChildIndex()
    idx.observe(child("Job", "sentiment-a1", 5))  # deleted while no watch ran
    idx.replace("Job", None, [child("Job", "sentiment-a2", 7, attempt=2)], "8")
    assert idx.primed("Job", OWNER[1]) and idx.primed("Job", "team-b")
    assert not idx.primed("Pod", OWNER[1])
    assert [j["metadata"]["name"] for j in idx.children("Job", OWNER) or []] == ["sentiment-a2"]


def test_jobs_without_pods_share_one_failed_create_list_per_namespace(monkeypatch: Any) -> None:
    """Why a Job has no pods comes from the Job controller's FailedCreate Events: a thousand
    such Jobs cost one list of their namespace's, not one list each."""
    listed: list[str] = []

    def lister(namespace: str) -> list[dict[str, Any]]:
        listed.append(namespace)
        quota = "exceeded quota: gpu-quota"
        return [{"involvedObject": {"name": "a-a1"}, "reason": "FailedCreate", "message": quota}]

    events = job_events.FailedCreates(lister)
    assert [e["message"] for e in events.of("team-a", "a-a1")] == ["exceeded quota: gpu-quota"]
    assert all(events.of("team-a", f"job{i}-a1") == [] for i in range(1000))
    assert listed == ["team-a"]
    events.of("team-b", "b-a1")
    assert listed == ["team-a", "team-b"]
    monkeypatch.setattr(job_events, "MAX_AGE_SECONDS", 0.0)  # stale: the next look lists
    events.of("team-a", "a-a1")
    assert listed == ["team-a", "team-b", "team-a"]


def test_old_deletions_are_forgotten_so_the_index_does_not_grow_forever(monkeypatch: Any) -> None:
    clock = [1000.0]
    monkeypatch.setattr(index.time, "monotonic", lambda: clock[0])
    idx = primed()
    for i in range(100):
        idx.observe(child("Pod", f"p{i}", 3), deleted=True)
    assert len(idx._tombstones) == 100
    clock[0] += index.TOMBSTONE_SECONDS + 1
    idx.observe(child("Pod", "last", 4), deleted=True)
    assert list(idx._tombstones) == ["uid-last"]
