"""Operator benchmark on the real local cluster: N FineTuneJobs applied at once.

Measures, from watches opened by this script (client-side clocks, millisecond resolution):
- created -> Job created: create call returned -> the attempt's batch Job first seen;
- Job complete -> Succeeded: Job's Complete condition first seen -> resource phase Succeeded;
and the operator's peak RSS (VmHWM). Pods are pinned to a node label no node has, so nothing
runs; the script plays the kubelet and marks each pod Succeeded through the status
subresource, and the real Job controller completes the Job as it would for a kubelet's report.

    .venv/bin/python -m bench.bench_operator --count 200 [--complete-rate 0]
    .venv/bin/python -m bench.bench_operator --count 1200 --rate 10 [--run-seconds 5]

Prints one JSON object. ``--complete-rate`` paces completions (pods per second; 0 = all at
once, the worst case). ``--rate`` is the sustained mode: jobs arrive at that rate, and each
pod succeeds ``--run-seconds`` after it appears, so jobs start and finish all along while
the number of jobs the operator knows grows to ``--count``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

GROUP, VERSION = "snowtrain.io", "v1alpha1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def resource(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "/models/minilm"},
            "data": {"table": "REVIEWS"},
            "resources": {"gpusPerNode": 0, "nodeSelector": {"snowtrain.io/bench": "no-node"}},
            "backoffLimit": 0,
        },
    }


class Recorder:
    """Watches Jobs and FineTuneJobs in the namespace; records first-seen times."""

    def __init__(self, api: client.ApiClient, ns: str) -> None:
        self.api, self.ns = api, ns
        self.job_seen: dict[str, float] = {}
        self.job_complete: dict[str, float] = {}
        self.succeeded: dict[str, float] = {}
        self.pods: dict[str, tuple[str, float]] = {}
        """owner -> (its first pod, when it was first seen)."""
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._jobs, daemon=True),
            threading.Thread(target=self._ftjs, daemon=True),
            threading.Thread(target=self._pods, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _jobs(self) -> None:
        # Plain dicts (return_type "object"), not V1Job models: building those costs this
        # process CPU the operator shares the machine with, and would delay what it records.
        batch = client.BatchV1Api(self.api)
        while not self.stop.is_set():
            w = watch.Watch(return_type="object")
            for ev in w.stream(batch.list_namespaced_job, self.ns, timeout_seconds=30):
                now = time.monotonic()
                job = ev["object"]
                owner = (job["metadata"].get("labels") or {}).get("snowtrain.io/job")
                if not owner:
                    continue
                self.job_seen.setdefault(owner, now)
                conditions = (job.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Complete" and c["status"] == "True" for c in conditions):
                    self.job_complete.setdefault(owner, now)
                if self.stop.is_set():
                    break

    def _pods(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self.stop.is_set():
            w = watch.Watch(return_type="object")
            stream = w.stream(
                core.list_namespaced_pod, self.ns, label_selector="snowtrain.io/job",
                timeout_seconds=30,
            )  # fmt: skip
            for ev in stream:
                meta = ev["object"]["metadata"]
                owner = meta["labels"]["snowtrain.io/job"]
                self.pods.setdefault(owner, (meta["name"], time.monotonic()))
                if self.stop.is_set():
                    break

    def _ftjs(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while not self.stop.is_set():
            w = watch.Watch()
            stream = w.stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, "finetunejobs",
                timeout_seconds=30,
            )  # fmt: skip
            for ev in stream:
                obj = ev["object"]
                if (obj.get("status") or {}).get("phase") == "Succeeded":
                    self.succeeded.setdefault(obj["metadata"]["name"], time.monotonic())
                if self.stop.is_set():
                    break


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def work_per_job(port: int, jobs: int) -> dict[str, float]:
    """Reconciles and API requests (by verb and resource) per job, from the operator's /metrics: what
    grows with the job count shows here first."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "snowtrain_operator_reconcile_duration_seconds_count":
                counts["reconciles"] = counts.get("reconciles", 0.0) + sample.value
            elif sample.name == "snowtrain_operator_api_requests_total":
                verb = f"api_{sample.labels['verb']}_{sample.labels['resource']}"
                counts[verb] = counts.get(verb, 0.0) + sample.value
    return {k: round(v / jobs, 2) for k, v in sorted(counts.items())}


def sustained(
    rec: Recorder,
    names: list[str],
    create: Any,
    complete: Any,
    rate: float,
    run_seconds: float,
    deadline: float,
) -> None:
    """Create `rate` jobs per second; each pod succeeds `run_seconds` after it appears."""
    stop = threading.Event()

    def completer() -> None:
        done: set[str] = set()
        with ThreadPoolExecutor(8) as pool:
            while not stop.is_set():
                now = time.monotonic()
                for owner, (pod_name, seen) in list(rec.pods.items()):
                    if owner not in done and now - seen >= run_seconds:
                        done.add(owner)
                        pool.submit(complete, pod_name)
                time.sleep(0.1)

    finisher = threading.Thread(target=completer, daemon=True)
    finisher.start()
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        for i, name in enumerate(names):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            pool.submit(create, name)
    while len(rec.succeeded) < len(names) and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    finisher.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--complete-rate", type=float, default=0.0)
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="jobs created per second, sustained (0: all at once); each pod then succeeds "
        "--run-seconds after it appears",
    )  # fmt: skip
    parser.add_argument("--run-seconds", type=float, default=5.0)
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="NAME=VALUE",
        help="an operator setting to try (SNOWTRAIN_MAX_WORKERS=64); repeatable",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    from tests.cluster import localkube
    from tests.fixtures.operator import OperatorProcess, delete_jobs, free_port

    cluster = localkube.up(crds_dir=Path("manifests/crds"))
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    metrics_port = free_port()
    op = OperatorProcess(
        cluster.kubeconfig, [ns], "snowtrain/fake-trainer:test",
        env={
            "SNOWTRAIN_PROGRESS_REFRESH_SECONDS": "10",
            "SNOWTRAIN_METRICS_PORT": str(metrics_port),
            **dict(item.split("=", 1) for item in args.operator_env),
        },
    )  # fmt: skip
    op.start()
    result: dict[str, Any] = {"count": args.count, "operator_env": args.operator_env}
    try:
        rec = Recorder(api, ns)
        time.sleep(1)
        names = [f"bench-{i:04d}" for i in range(args.count)]
        assert op.proc is not None
        cpu_before = cpu_seconds(op.proc.pid)
        created: dict[str, float] = {}

        def create(name: str) -> None:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "finetunejobs", resource(name))  # fmt: skip
            created[name] = time.monotonic()

        def complete(pod_name: str) -> None:
            core.patch_namespaced_pod_status(pod_name, ns, {"status": {"phase": "Succeeded"}})

        t0 = time.monotonic()
        deadline = t0 + args.timeout + (args.count / args.rate if args.rate > 0 else 0)
        if args.rate > 0:
            sustained(rec, names, create, complete, args.rate, args.run_seconds, deadline)
        else:
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, names))
            result["apply_seconds"] = round(time.monotonic() - t0, 2)
            while len(rec.pods) < len(names) and time.monotonic() < deadline:
                time.sleep(0.2)
            # Play the kubelet: each attempt's pod succeeds.
            with ThreadPoolExecutor(8) as pool:
                for pod_name, _ in list(rec.pods.values()):
                    pool.submit(complete, pod_name)
                    if args.complete_rate > 0:
                        time.sleep(1 / args.complete_rate)
        while len(rec.succeeded) < len(names) and time.monotonic() < deadline:
            time.sleep(0.2)
        rec.stop.set()
        to_job = [rec.job_seen[n] - created[n] for n in names if n in rec.job_seen]
        to_done = [
            rec.succeeded[n] - rec.job_complete[n]
            for n in names
            if n in rec.succeeded and n in rec.job_complete
        ]
        for label, values in (("created_to_job_s", to_job), ("complete_to_succeeded_s", to_done)):
            result[label] = {
                "n": len(values),
                "p50": round(percentile(values, 50), 3),
                "p99": round(percentile(values, 99), 3),
                "max": round(max(values), 3) if values else None,
                "mean": round(statistics.fmean(values), 3) if values else None,
            }
        assert op.proc is not None
        result["operator_peak_rss_mib"] = round(peak_rss_mib(op.proc.pid), 1)
        result["operator_cpu_seconds"] = round(cpu_seconds(op.proc.pid) - cpu_before, 1)
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        result["load_average_1m"] = os.getloadavg()[0]
        if args.rate > 0:
            result["created_per_s"] = args.rate
            result["run_seconds"] = args.run_seconds
        else:
            result["complete_rate_per_s"] = args.complete_rate or "all at once"
        result["operator_cpu_ms_per_job"] = round(
            result["operator_cpu_seconds"] * 1000 / len(names), 1
        )
        result["operator_work_per_job"] = work_per_job(metrics_port, len(names))
        print(json.dumps(result, indent=2), flush=True)
    finally:
        try:
            delete_jobs(cluster.kubeconfig, ns, timeout=120)
        except Exception as exc:  # cleanup is best effort; the numbers are already out
            print(f"cleanup: {exc}", file=sys.stderr)
        op.stop()
        core.delete_namespace(ns, propagation_policy="Background")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
