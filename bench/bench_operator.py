"""Operator benchmark on the real local cluster: N FineTuneJobs applied at once.

Measures, from watches opened by this script (client-side clocks, millisecond resolution):
- created -> Job created: create call returned -> the attempt's batch Job first seen;
- Job complete -> Succeeded: Job's Complete condition first seen -> resource phase Succeeded;
and the operator's peak RSS (VmHWM). Pods are pinned to a node label no node has, so nothing
runs; the script plays the kubelet and marks each pod Succeeded through the status
subresource, and the real Job controller completes the Job as it would for a kubelet's report.

    .venv/bin/python -m bench.bench_operator --count 200 [--complete-rate 0]

Prints one JSON object. ``--complete-rate`` paces completions (pods per second; 0 = all at
once, the worst case).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

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
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._jobs, daemon=True),
            threading.Thread(target=self._ftjs, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _jobs(self) -> None:
        batch = client.BatchV1Api(self.api)
        while not self.stop.is_set():
            w = watch.Watch()
            for ev in w.stream(batch.list_namespaced_job, self.ns, timeout_seconds=30):
                now = time.monotonic()
                job = ev["object"]
                owner = (job.metadata.labels or {}).get("snowtrain.io/job")
                if not owner:
                    continue
                self.job_seen.setdefault(owner, now)
                if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):  # fmt: skip
                    self.job_complete.setdefault(owner, now)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--complete-rate", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    from tests.cluster import localkube
    from tests.fixtures.operator import OperatorProcess, delete_jobs

    cluster = localkube.up(crds_dir=Path("manifests/crds"))
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    op = OperatorProcess(
        cluster.kubeconfig, [ns], "snowtrain/fake-trainer:test",
        env={"SNOWTRAIN_PROGRESS_REFRESH_SECONDS": "10"},
    )  # fmt: skip
    op.start()
    result: dict[str, Any] = {"count": args.count}
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

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, names))
        result["apply_seconds"] = round(time.monotonic() - t0, 2)
        deadline = time.monotonic() + args.timeout
        while len(rec.job_seen) < len(names) and time.monotonic() < deadline:
            time.sleep(0.2)
        # Play the kubelet: each attempt's pod succeeds.
        pods: list[client.V1Pod] = []
        while len(pods) < len(names) and time.monotonic() < deadline:
            pods = core.list_namespaced_pod(ns, label_selector="snowtrain.io/job").items
            time.sleep(0.5)

        def complete(pod: client.V1Pod) -> None:
            core.patch_namespaced_pod_status(
                pod.metadata.name, ns, {"status": {"phase": "Succeeded"}}
            )

        with ThreadPoolExecutor(8) as pool:
            for pod in pods:
                pool.submit(complete, pod)
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
        result["complete_rate_per_s"] = args.complete_rate or "all at once"
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
