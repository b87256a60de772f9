"""A corpus of hostile and malformed jobs, each with the field it must be refused on and why.

Used twice with the same verdicts: `snowtrain validate` (tests/unit/test_hostile_jobs.py) and
`kubectl apply` against the real API server with the admission webhook
(tests/integration/test_operator_webhook.py). Every case is a patch onto the shipped example
FineTuneJob (or PretrainJob), so each one differs from a valid job in exactly one way.

The categories: late failures (a child or pod Kubernetes would refuse after admission, a
trainer that would fail after scheduling and an image pull), stuck jobs (a pod the scheduler
could never place), unsafe SQL, and types (what the API server's schema refuses).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "manifests/examples"


@dataclass(frozen=True)
class Hostile:
    id: str
    why: str
    patch: dict[str, Any]
    field: str
    kind: str = "FineTuneJob"
    name: str = "hostile"
    removals: tuple[str, ...] = field(default_factory=tuple)

    def manifest(self, namespace: str | None = None) -> dict[str, Any]:
        example = "finetune.yaml" if self.kind == "FineTuneJob" else "pretrain.yaml"
        job = yaml.safe_load((EXAMPLES / example).read_text())
        job["metadata"] = {"name": self.name}
        if namespace:
            job["metadata"]["namespace"] = namespace
        _merge(job, copy.deepcopy(self.patch))
        for dotted in self.removals:
            *parents, last = dotted.split(".")
            node = job
            for p in parents:
                node = node[p]
            node.pop(last, None)
        return job


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _spec(**kw: Any) -> dict[str, Any]:
    return {"spec": kw}


def _res(**kw: Any) -> dict[str, Any]:
    return _spec(resources=kw)


def _training(**kw: Any) -> dict[str, Any]:
    return _spec(training=kw)


def _data(**kw: Any) -> dict[str, Any]:
    return _spec(data=kw)


def _pod(**kw: Any) -> dict[str, Any]:
    return _spec(podTemplate={"spec": kw})


def _container(**kw: Any) -> dict[str, Any]:
    return _pod(containers=[{"name": "trainer", **kw}])


def _tol(**kw: Any) -> dict[str, Any]:
    return _res(tolerations=[kw])


CASES: list[Hostile] = [
    # -- escalation: nothing in a job may widen what its pods can do -----------------------------
    Hostile("pod-host-network", "joins the node's network", _pod(hostNetwork=True), "spec.podTemplate.spec"),
    Hostile("pod-host-pid", "sees the node's processes", _pod(hostPID=True), "spec.podTemplate.spec"),
    Hostile("pod-host-ipc", "shares the node's IPC", _pod(hostIPC=True), "spec.podTemplate.spec"),
    Hostile("pod-node-name", "bypasses the scheduler", _pod(nodeName="gpu-node-1"), "spec.podTemplate.spec"),
    Hostile("pod-run-as-root", "the pod's security context is the operator's", _pod(securityContext={"runAsUser": 0}), "spec.podTemplate.spec"),
    Hostile("pod-seccomp-unconfined", "the pod's security context is the operator's", _pod(securityContext={"seccompProfile": {"type": "Unconfined"}}), "spec.podTemplate.spec"),
    Hostile("pod-sa-token", "the trainer needs no Kubernetes credentials", _pod(automountServiceAccountToken=True), "spec.podTemplate.spec"),
    Hostile("pod-init-container", "an extra container with the credentials mounted", _pod(initContainers=[{"name": "x", "image": "busybox"}]), "spec.podTemplate.spec"),
    Hostile("pod-share-pid", "exposes the trainer's memory", _pod(shareProcessNamespace=True), "spec.podTemplate.spec"),
    Hostile("pod-sidecar", "a sidecar runs any image with the pod's volumes", _pod(containers=[{"name": "sidecar"}]), "spec.podTemplate.spec.containers[0].name"),
    Hostile("container-privileged", "a privileged trainer owns the node", _container(securityContext={"privileged": True}), "spec.podTemplate.spec.containers[0]"),
    Hostile("container-caps", "added capabilities", _container(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}), "spec.podTemplate.spec.containers[0]"),
    Hostile("container-image", "the image is spec.image, within the allowed repositories", _container(image="attacker/miner"), "spec.podTemplate.spec.containers[0]"),
    Hostile("container-command", "a command could print the mounted password", _container(command=["sh", "-c", "cat /etc/snowtrain/credentials/password"]), "spec.podTemplate.spec.containers[0]"),
    Hostile("container-args", "the trainer's arguments are the operator's", _container(args=["--config", "/tmp/x"]), "spec.podTemplate.spec.containers[0]"),
    Hostile("container-env-from", "imports unchecked variable names", _container(envFrom=[{"secretRef": {"name": "other"}}]), "spec.podTemplate.spec.containers[0]"),
    Hostile("container-lifecycle", "a hook runs a command in the trainer", _container(lifecycle={"postStart": {"exec": {"command": ["sh"]}}}), "spec.podTemplate.spec.containers[0]"),
    Hostile("env-snowflake-host", "would send the password elsewhere", _container(env=[{"name": "SNOWFLAKE_HOST", "value": "collector.example"}]), "spec.podTemplate.spec.containers[0].env[0]"),
    Hostile("env-snowflake-protocol", "would send the password in clear text", _container(env=[{"name": "SNOWFLAKE_PROTOCOL", "value": "http"}]), "spec.podTemplate.spec.containers[0].env[0]"),
    Hostile("env-snowtrain", "the trainer's own settings", _container(env=[{"name": "SNOWTRAIN_PROCESSES_PER_NODE", "value": "64"}]), "spec.podTemplate.spec.containers[0].env[0]"),
    Hostile("volume-host-path", "mounts the node's filesystem", _pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "spec.podTemplate.spec.volumes[0]"),
    Hostile("volume-reserved-name", "would replace the credentials Secret with another", _pod(volumes=[{"name": "snowflake", "secret": {"secretName": "other"}}]), "spec.podTemplate.spec.volumes[0].name"),
    Hostile("volume-two-kinds", "one volume, one kind", _pod(volumes=[{"name": "x", "emptyDir": {}, "secret": {"secretName": "s"}}]), "spec.podTemplate.spec.volumes[0]"),
    Hostile("mount-without-volume", "a mount names a volume the job adds", _container(volumeMounts=[{"name": "nowhere", "mountPath": "/x"}]), "spec.podTemplate.spec.containers[0].volumeMounts[0].name"),
    Hostile("serving-host-network", "the model server's pods too", _spec(serving={"podTemplate": {"spec": {"hostNetwork": True}}}), "spec.serving.podTemplate.spec"),
    Hostile("serving-privileged", "the model server's container too", _spec(serving={"podTemplate": {"spec": {"containers": [{"name": "server", "securityContext": {"privileged": True}}]}}}), "spec.serving.podTemplate.spec.containers[0]"),
    Hostile("serving-other-container", "only the server container", _spec(serving={"podTemplate": {"spec": {"containers": [{"name": "trainer"}]}}}), "spec.serving.podTemplate.spec.containers[0].name"),
    Hostile("serving-volume-serve-auth", "would replace the model server's token Secret with another", _spec(serving={"podTemplate": {"spec": {"volumes": [{"name": "serve-auth", "secret": {"secretName": "other"}}]}}}), "spec.serving.podTemplate.spec.volumes[0].name"),
    Hostile("serving-auth-bad-secret", "a Secret name is lowercase DNS", _spec(serving={"auth": {"secretRef": {"name": "Serve_Token"}}}), "spec.serving.auth.secretRef.name"),
    Hostile("serving-auth-bad-key", "a Secret key has no slashes (it would name a path)", _spec(serving={"auth": {"secretRef": {"name": "t", "key": "../token"}}}), "spec.serving.auth.secretRef.key"),
    Hostile("serving-auth-no-secret", "auth without the Secret that holds the token", _spec(serving={"auth": {}}), "spec.serving.auth"),
    # -- types: what the API server's schema refuses, refused locally too ------------------------
    Hostile("batch-size-string", "a string is not an integer", _training(batchSize="16"), "spec.training.batchSize"),
    Hostile("batch-size-bool", "true is not an integer", _training(batchSize=True), "spec.training.batchSize"),
    Hostile("batch-size-float", "1.5 samples is not a count", _training(batchSize=1.5), "spec.training.batchSize"),
    Hostile("epochs-string", "a number written as a string", _training(epochs="3"), "spec.training.epochs"),
    Hostile("learning-rate-string", "a decimal written as a string", _training(learningRate="0.1"), "spec.training.learningRate"),
    Hostile("max-steps-negative", "negative steps", _training(maxSteps=-5), "spec.training.maxSteps"),
    Hostile("suspend-string", "'yes' is not a boolean", _spec(suspend="yes"), "spec.suspend"),
    Hostile("gpus-string", "a GPU count written as a string", _res(gpusPerNode="1"), "spec.resources.gpusPerNode"),
    Hostile("replicas-string", "a replica count written as a string", _spec(serving={"replicas": "1"}), "spec.serving.replicas"),
    Hostile("backoff-negative", "negative retries", _spec(backoffLimit=-1), "spec.backoffLimit"),
    Hostile("memory-not-quantity", "not a Kubernetes quantity", _res(memory="16 gigs"), "spec.resources.memory"),
    Hostile("lr-too-big", "a learning rate above 1 diverges", _training(learningRate=5), "spec.training.learningRate"),
    # -- names whose children Kubernetes would refuse ---------------------------------------------
    Hostile("served-name-leading-digit", "its Service 1st-model-serve is not a DNS-1035 label", {}, "metadata.name", name="1st-model"),
    Hostile("served-name-all-digits", "its Service 2024-serve is not a DNS-1035 label", {}, "metadata.name", name="2024"),
    # -- placement: the scheduler could never place the pod (stuck) --------------------------------
    Hostile("node-selector-key-space", "a label key has no spaces", _res(nodeSelector={"gpu type": "a100"}), "spec.resources.nodeSelector"),
    Hostile("node-selector-key-upper-prefix", "a key prefix is a lowercase DNS subdomain", _res(nodeSelector={"Example.com/gpu": "a100"}), "spec.resources.nodeSelector"),
    Hostile("node-selector-empty-prefix", "'/gpu' has an empty prefix", _res(nodeSelector={"/gpu": "a100"}), "spec.resources.nodeSelector"),
    Hostile("node-selector-value-long", "a label value is at most 63 characters", _res(nodeSelector={"pool": "a" * 64}), "spec.resources.nodeSelector"),
    Hostile("node-selector-value-chars", "a label value has no spaces or '!'", _res(nodeSelector={"pool": "gpu pool!"}), "spec.resources.nodeSelector"),
    Hostile("node-selector-value-number", "a label value is a string", _res(nodeSelector={"pool": 5}), "spec.resources.nodeSelector"),
    Hostile("toleration-unknown-field", "a misspelt toleration field is silently dropped by Kubernetes", _tol(key="gpu", operator="Exists", efect="NoSchedule"), "spec.resources.tolerations[0]"),
    Hostile("toleration-operator", "operators are Equal or Exists", _tol(key="gpu", operator="In", value="a"), "spec.resources.tolerations[0].operator"),
    Hostile("toleration-exists-value", "Exists takes no value", _tol(key="gpu", operator="Exists", value="a100"), "spec.resources.tolerations[0].value"),
    Hostile("toleration-equal-no-key", "an empty key needs Exists", _tol(operator="Equal", value="a"), "spec.resources.tolerations[0].key"),
    Hostile("toleration-effect", "no such effect", _tol(key="gpu", operator="Exists", effect="NoRun"), "spec.resources.tolerations[0].effect"),
    Hostile("toleration-seconds-noschedule", "tolerationSeconds applies to NoExecute only", _tol(key="gpu", operator="Exists", effect="NoSchedule", tolerationSeconds=60), "spec.resources.tolerations[0].tolerationSeconds"),
    Hostile("toleration-seconds-string", "tolerationSeconds is an integer", _tol(key="gpu", operator="Exists", effect="NoExecute", tolerationSeconds="60"), "spec.resources.tolerations[0].tolerationSeconds"),
    Hostile("toleration-bad-key", "a toleration key is a label key", _tol(key="gpu type", operator="Exists"), "spec.resources.tolerations[0].key"),
    Hostile("gpu-resource-no-domain", "an extended resource needs a vendor domain", _res(gpuResourceName="gpu"), "spec.resources.gpuResourceName"),
    Hostile("gpu-resource-kubernetes-io", "kubernetes.io resources are Kubernetes' own", _res(gpuResourceName="kubernetes.io/gpu"), "spec.resources.gpuResourceName"),
    Hostile("gpu-resource-empty-name", "'nvidia.com/' names no resource", _res(gpuResourceName="nvidia.com/"), "spec.resources.gpuResourceName"),
    Hostile("gpu-resource-upper-domain", "the domain is lowercase", _res(gpuResourceName="NVIDIA.com/gpu"), "spec.resources.gpuResourceName"),
    Hostile("queue-name-long", "Kueue's queue-name label value is at most 63 characters", _res(queueName="q" * 64), "spec.resources.queueName"),
    Hostile("queue-name-upper", "not a Kubernetes name", _res(queueName="TeamQueue"), "spec.resources.queueName"),
    Hostile("priority-class-upper", "not a Kubernetes name", _res(priorityClassName="High"), "spec.resources.priorityClassName"),
    # -- model locations the trainer cannot (or must not) read -----------------------------------
    Hostile("base-model-http", "the trainer does not download URLs", _spec(baseModel={"uri": "http://models.example/m.bin"}), "spec.baseModel.uri"),
    Hostile("base-model-s3", "no object-store reader", _spec(baseModel={"uri": "s3://bucket/model"}), "spec.baseModel.uri"),
    Hostile("base-model-file-url", "a file:// URL reaches the image's files", _spec(baseModel={"uri": "file:///etc/passwd"}), "spec.baseModel.uri"),
    Hostile("base-model-traversal", "'..' climbs out of the mounted claim", _spec(baseModel={"uri": "pvc://models/../../etc"}), "spec.baseModel.uri"),
    Hostile("base-model-abs-traversal", "'..' in an absolute path", _spec(baseModel={"uri": "/models/../../etc/shadow"}), "spec.baseModel.uri"),
    Hostile("base-model-relative-up", "a relative path up the tree", _spec(baseModel={"uri": "../secrets"}), "spec.baseModel.uri"),
    Hostile("base-model-bad-claim", "a claim name is lowercase DNS", _spec(baseModel={"uri": "pvc://Bad_Claim/model"}), "spec.baseModel.uri"),
    Hostile("base-model-no-claim", "pvc:/// names no claim", _spec(baseModel={"uri": "pvc:///model"}), "spec.baseModel.uri"),
    Hostile("base-model-home", "~ is not expanded in a pod", _spec(baseModel={"uri": "~/model"}), "spec.baseModel.uri"),
    Hostile("base-model-not-hub-id", "three parts are no hub id", _spec(baseModel={"uri": "org/name/extra"}), "spec.baseModel.uri"),
    Hostile("base-model-both", "one source only", _spec(baseModel={"uri": "org/name", "pretrainJobRef": {"name": "p"}}), "spec.baseModel"),
    Hostile("tokenizer-url", "the trainer does not download URLs", _spec(tokenizer={"uri": "https://example.com/tok.json"}), "spec.tokenizer.uri", kind="PretrainJob"),
    Hostile("tokenizer-traversal", "'..' climbs out of the claim", _spec(tokenizer={"uri": "pvc://models/../other"}), "spec.tokenizer.uri", kind="PretrainJob"),
    # -- output: never into another job's folder -------------------------------------------------
    Hostile("output-other-job", "would overwrite another job's model and checkpoints", _spec(output={"volumeClaimName": "snowtrain-models", "path": "finetunejob/other-team/victim"}), "spec.output.path"),
    Hostile("output-other-kind", "the pretrain jobs' folder", _spec(output={"volumeClaimName": "snowtrain-models", "path": "pretrainjob/default/base"}), "spec.output.path"),
    Hostile("output-traversal", "'..' climbs out of the claim", _spec(output={"volumeClaimName": "snowtrain-models", "path": "../escape"}), "spec.output.path"),
    Hostile("output-absolute", "a path inside the claim is relative", _spec(output={"volumeClaimName": "snowtrain-models", "path": "/etc"}), "spec.output.path"),
    Hostile("output-bad-claim", "a claim name is lowercase DNS", _spec(output={"volumeClaimName": "Models!"}), "spec.output.volumeClaimName"),
    # -- SQL: only one read-only SELECT, names validated --------------------------------------
    Hostile("query-two-statements", "a second statement", _data(table=None, query="SELECT * FROM t; DROP TABLE t"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("query-dollar-name", "a$$b hides a second statement from a naive lexer", _data(query="SELECT text AS a$$b, label FROM t; DROP TABLE t; SELECT 1 AS c$$d"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("query-delete", "not a read", _data(query="DELETE FROM t"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("query-with-delete", "a CTE in front of a write", _data(query="WITH x AS (SELECT 1) DELETE FROM t"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("query-unterminated", "an unclosed string", _data(query="SELECT 'abc FROM t"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("query-call", "a stored procedure can do anything", _data(query="CALL drop_everything()"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("query-comment-hides", "a comment that hides a second statement", _data(query="SELECT 1 /* x */; DROP TABLE t"), "spec.data.query", removals=("spec.data.table",)),
    Hostile("table-injection", "a table name is an identifier, not SQL", _data(table="SENTIMENT; DROP TABLE X"), "spec.data.table"),
    Hostile("table-quote", "a quote in a name", _data(table='SENTIMENT"X'), "spec.data.table"),
    Hostile("column-injection", "a column name is an identifier", _data(columns={"text": "TEXT) FROM X --", "label": "LABEL"}), "spec.data: columns.text"),
    Hostile("table-and-query", "one source only", _data(query="SELECT 1"), "spec.data"),
    # -- semantics the trainer would fail on after scheduling ------------------------------------
    Hostile("lora-classification", "LoRA is for causal-lm jobs", _training(lora={"r": 8}), "spec.training.lora"),
    Hostile("fp16-no-gpu", "fp16 needs a GPU", {"spec": {"training": {"precision": "fp16"}, "resources": {"gpusPerNode": 0}}}, "spec.training.precision"),
    Hostile("heads-not-dividing", "hiddenSize must split into heads", _spec(architecture={"hiddenSize": 100, "numHeads": 3}), "spec.architecture.numHeads", kind="PretrainJob"),
    Hostile("column-role-unknown", "a column role the task does not have", _data(columns={"text": "TEXT", "label": "LABEL", "prompt": "P"}), "spec.data.columns.prompt"),
]  # fmt: skip

assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
