"""What a model server's pods say: when each got ready, and why one ended.

A Deployment's own status only counts ready pods; a server that exits (a model that will not
load, a liveness kill, the OOM killer) shows there as "0/1 ready" for as long as the kubelet
keeps restarting it. Its pods' container statuses say why, and the status and the canary
quote it.
"""

from __future__ import annotations

from typing import Any

from .context import Context
from .kube import list_children

#: How much of a failed server's termination message (its log's tail) is quoted.
CRASH_MESSAGE_CHARS = 300


def server_pods(ctx: Context, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployment's pods (by its selector) that are not leaving."""
    meta = deployment["metadata"]
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return [
        p
        for p in list_children(ctx.kube.core.list_namespaced_pod, meta["namespace"], selector)
        if not (p.get("metadata") or {}).get("deletionTimestamp")
    ]


def ready_since(pod: dict[str, Any]) -> str | None:
    """When the pod got ready (its Ready condition's transition), None when it is not."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return str(c.get("lastTransitionTime") or "")
    return None


def crash_of(pod: dict[str, Any]) -> str | None:
    """Why the pod's server ended (exit code, reason, the last line it wrote), None while it
    never has. A server only ends on its own when it failed; an exit on SIGTERM is the pod
    leaving (exit 0), and leaving pods are not asked."""
    name = (pod.get("metadata") or {}).get("name", "?")
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state"), cs.get("lastState")):
            ended = (state or {}).get("terminated")
            if not ended or (ended.get("exitCode") == 0 and ended.get("reason") != "OOMKilled"):
                continue
            lines = [ln for ln in str(ended.get("message") or "").splitlines() if ln.strip()]
            said = f": {lines[-1].strip()[-CRASH_MESSAGE_CHARS:]}" if lines else ""
            restarts = int(cs.get("restartCount") or 0)
            return (
                f"pod {name}'s server exited {ended.get('exitCode')} "
                f"({ended.get('reason') or 'Error'}, {restarts} restart(s)){said}"
            )
    return None


def first_crash(pods: list[dict[str, Any]]) -> str | None:
    return next((why for why in map(crash_of, pods) if why), None)
