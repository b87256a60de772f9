"""The operator's desired children: the pod spec a cluster admin and a user will see."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from snowtrain.api import parse_job
from snowtrain.api.torchrun import POD_IP_ENV, Rendezvous
from snowtrain.operator import children as ch
from snowtrain.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(trainer_image="snowtrain/trainer:test", image_pull_policy="Never")
NEW = ch.Capabilities(1, 30)
OLD = ch.Capabilities(1, 20)
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def ftj(**spec_overrides) -> dict:
    spec = {
        "task": "classification",
        "baseModel": {"uri": "pvc://base-models/minilm"},
        "data": {
            "table": "REVIEWS",
            "snowflake": {"secretRef": {"name": "sf-creds"}, "warehouse": "WH"},
        },
        "resources": {
            "gpusPerNode": 1,
            "cpu": "4",
            "memory": "16Gi",
            "sharedMemory": "2Gi",
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "priorityClassName": "training",
            "queueName": "team-a",
        },
        "output": {"volumeClaimName": "models", "path": "sentiment/v1"},
        "activeDeadlineSeconds": 3600,
        "backoffLimit": 1,
        "serving": {"replicas": 2, "port": 9000, "resources": {"cpu": "1", "memory": "2Gi"}},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "sentiment", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": spec,
    }


def _pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def _trainer(manifest: dict) -> dict:
    (container,) = [c for c in _pod(manifest)["containers"] if c["name"] == "trainer"]
    return container


def test_training_job_has_the_gpu_pod_spec_users_and_admins_expect() -> None:
    job = parse_job(ftj())
    m = ch.build_training_job(job, SETTINGS, 1, NEW)
    assert m["metadata"]["name"] == "sentiment-a1"
    labels = m["metadata"]["labels"]
    assert labels["snowtrain.io/job"] == "sentiment"
    assert labels["snowtrain.io/kind"] == "FineTuneJob"
    assert labels["snowtrain.io/attempt"] == "1"
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert m["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "snowtrain.io/v1alpha1",
            "kind": "FineTuneJob",
            "name": "sentiment",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = m["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 3600
    # Kueue admits queued Jobs by unsuspending them.
    assert spec["suspend"] is True
    pod = _pod(m)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["priorityClassName"] == "training"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    c = _trainer(m)
    assert c["command"] == [
        "python", "-m", "snowtrain.trainer", "--config", "/etc/snowtrain/config.json",
    ]  # fmt: skip
    assert c["image"] == "snowtrain/trainer:test"
    assert c["imagePullPolicy"] == "Never"
    limits = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert c["resources"] == {"requests": limits, "limits": limits}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"] == {}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"] == {
        "medium": "Memory",
        "sizeLimit": "2Gi",
    }
    assert volumes[mounts["/mnt/models"]["name"]]["persistentVolumeClaim"] == {
        "claimName": "models"
    }
    base = mounts["/mnt/base-model"]
    assert base["readOnly"] is True
    assert volumes[base["name"]]["persistentVolumeClaim"] == {
        "claimName": "base-models",
        "readOnly": True,
    }
    creds = mounts["/var/run/secrets/snowtrain/snowflake"]
    assert creds["readOnly"] is True
    assert volumes[creds["name"]]["secret"]["secretName"] == "sf-creds"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HF_HOME"].startswith("/tmp/")
    assert env["HOME"] == "/tmp"
    # A real Kubernetes schema accepts it.
    kubernetes_validate.validate(m, "1.25", strict=True)


def test_config_map_carries_the_trainer_config_but_never_the_secret() -> None:
    job = parse_job(ftj())
    cm = ch.build_config_map(job, SETTINGS)
    assert cm["metadata"]["name"] == "sentiment-config"
    config = json.loads(cm["data"]["config.json"])
    assert config["output"]["dir"] == "/mnt/models/sentiment/v1"
    assert config["output"]["checkpointDir"] == "/mnt/models/sentiment/v1/checkpoints"
    assert config["output"]["uri"] == "pvc://models/sentiment/v1"
    assert config["baseModel"] == "/mnt/base-model/minilm"
    assert config["data"]["snowflake"]["credentialsDir"] == "/var/run/secrets/snowtrain/snowflake"
    assert config["data"]["snowflake"]["warehouse"] == "WH"
    assert "sf-creds" not in cm["data"]["config.json"]
    assert "password" not in cm["data"]["config.json"].lower()
    kubernetes_validate.validate(cm, "1.25", strict=True)


def test_pod_template_override_merges_onto_the_trainer_container_by_name() -> None:
    override = {
        "metadata": {"labels": {"team": "nlp"}},
        "spec": {
            "terminationGracePeriodSeconds": 600,
            "volumes": [{"name": "extra", "configMap": {"name": "vocab"}}],
            "containers": [
                {
                    "name": "trainer",
                    "env": [{"name": "FAKE_TRAINER_MODE", "value": "succeed"}],
                    "volumeMounts": [{"name": "extra", "mountPath": "/extra", "readOnly": True}],
                },
            ],
        },
    }
    job = parse_job(ftj(podTemplate=override, resources={"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}))  # fmt: skip
    m = ch.build_training_job(job, SETTINGS, 2, NEW)
    pod = _pod(m)
    assert pod["terminationGracePeriodSeconds"] == 600
    assert [c["name"] for c in pod["containers"]] == ["trainer"]
    env = {e["name"]: e["value"] for e in _trainer(m)["env"]}
    assert env["FAKE_TRAINER_MODE"] == "succeed"
    assert env["SNOWTRAIN_ATTEMPT"] == "2"
    assert _trainer(m)["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "extra", "mountPath": "/extra", "readOnly": True} in _trainer(m)["volumeMounts"]
    assert {"name": "extra", "configMap": {"name": "vocab"}} in pod["volumes"]
    # What the override does not set stays the operator's (an unset list replaces nothing).
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["automountServiceAccountToken"] is False
    labels = m["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "nlp"
    assert labels["snowtrain.io/job"] == "sentiment"


def test_the_operators_own_volumes_are_the_reserved_names() -> None:
    """An override volume named like one of these would merge into it (another Secret as the
    credentials): validation refuses the names, and they must be all the builders use."""
    from snowtrain.api.pod import RESERVED_VOLUME_NAMES

    job = parse_job(ftj(resources={"nodes": 1}, output={"volumeClaimName": "m"}))
    names = {v["name"] for v in _pod(ch.build_training_job(job, SETTINGS, 1, NEW))["volumes"]}
    served = parse_job(
        ftj(output={"volumeClaimName": "m"}, serving={"auth": {"secretRef": {"name": "t"}}})
    )
    dep = ch.build_serving_deployment(served, SETTINGS, "pvc://m/x")
    names |= {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert names <= RESERVED_VOLUME_NAMES


def test_several_gpus_on_one_node_are_the_trainers_to_use() -> None:
    """The trainer starts one rank per GPU the pod sees (trainer/launch.py); the pod asks
    for the GPUs and runs the plain command."""
    job = parse_job(ftj(resources={"gpusPerNode": 4}))
    c = _trainer(ch.build_training_job(job, SETTINGS, 1, NEW))
    assert c["command"] == [
        "python",
        "-m",
        "snowtrain.trainer",
        "--config",
        "/etc/snowtrain/config.json",
    ]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_several_nodes_are_alike_pods_of_one_job_meeting_at_a_store_service_ip() -> None:
    """No Indexed Job and no DNS name: the same manifests on 1.20 as on 1.30."""
    job = parse_job(
        ftj(backoffLimit=3, resources={"gpusPerNode": 2, "nodes": 3, "tolerations": [GPU_TAINT]})
    )
    for caps in (OLD, NEW):
        m = ch.build_training_job(job, SETTINGS, 2, caps, rendezvous_endpoint="10.96.0.7:29400")
        assert "completionMode" not in m["spec"] and "subdomain" not in _pod(m)
        assert m["spec"]["completions"] == m["spec"]["parallelism"] == 3
        container = _trainer(m)
        # the launcher (not torchrun itself) maps rank exit codes and keeps the grace period
        assert container["command"] == list(ch.TRAINER_COMMAND)
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        meet = Rendezvous.from_env({**env, POD_IP_ENV: "10.244.0.9"})
        assert meet == Rendezvous(3, "10.96.0.7:29400", "sentiment-a2", "10.244.0.9", 3)
        assert env[POD_IP_ENV] == {"fieldRef": {"fieldPath": "status.podIP"}}
    with pytest.raises(ValueError, match="rendezvous"):
        ch.build_training_job(job, SETTINGS, 2, NEW)  # several nodes, nowhere to meet

    store = ch.build_rendezvous_job(job, SETTINGS, 2, NEW)
    service = ch.build_rendezvous_service(job, 2)
    assert store["metadata"]["name"] == service["metadata"]["name"] == "sentiment-a2-rdzv"
    pod = store["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 29400 and "clusterIP" not in service["spec"]
    # the training policy admits the trainer pods to the store (it selects the job's pods)
    policy = ch.build_training_network_policy(job)["spec"]["podSelector"]["matchLabels"]
    assert policy.items() <= pod["metadata"]["labels"].items()
    (c,) = pod["spec"]["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["runAsNonRoot"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "nvidia.com/gpu" not in c["resources"]["limits"]  # no GPU held for a key-value store
    assert pod["spec"]["tolerations"] == [GPU_TAINT]
    assert c["readinessProbe"]["tcpSocket"]["port"] == 29400
    # a store Job is told apart from the attempt Jobs by its component label
    assert store["metadata"]["labels"][ch.LABEL_COMPONENT] == "rendezvous"
    assert m["metadata"]["labels"][ch.LABEL_COMPONENT] == "trainer"
    assert "suspend" not in store["spec"]  # no queue: nothing holds it
    queued = parse_job(ftj(resources={"nodes": 2, "queueName": "team-a"}))
    kueued = ch.build_rendezvous_job(queued, SETTINGS, 1, NEW)
    assert kueued["metadata"]["labels"][ch.KUEUE_QUEUE_LABEL] == "team-a"
    assert kueued["spec"]["suspend"] is True  # Kueue admits it, like the trainer Job
    assert "suspend" not in ch.build_rendezvous_job(queued, SETTINGS, 1, OLD)["spec"]


def test_suspend_field_only_where_the_server_has_it() -> None:
    job = parse_job(ftj(resources={"gpusPerNode": 0}, suspend=True))
    assert ch.build_training_job(job, SETTINGS, 1, NEW)["spec"]["suspend"] is True
    assert "suspend" not in ch.build_training_job(job, SETTINGS, 1, OLD)["spec"]
    running = parse_job(ftj(resources={"gpusPerNode": 0}))
    assert ch.build_training_job(running, SETTINGS, 1, NEW)["spec"]["suspend"] is False
    assert "nvidia.com/gpu" not in str(ch.build_training_job(running, SETTINGS, 1, NEW))


def test_without_a_claim_the_model_goes_to_an_empty_dir() -> None:
    job = parse_job(ftj(output={}, serving=None))
    m = ch.build_training_job(job, SETTINGS, 1, NEW)
    (models,) = [v for v in _pod(m)["volumes"] if v["name"] == "models"]
    assert models == {"name": "models", "emptyDir": {}}
    config = json.loads(ch.build_config_map(job, SETTINGS)["data"]["config.json"])
    assert config["output"]["dir"] == "/mnt/models/finetunejob/ml/sentiment"
    assert "uri" not in config["output"]


def test_pretrain_job_model_is_mounted_read_only_for_a_dependent_fine_tune() -> None:
    job = parse_job(ftj(baseModel={"pretrainJobRef": {"name": "gpt-small"}}))
    uri = "pvc://models/pretrainjob/ml/gpt-small"
    m = ch.build_training_job(job, SETTINGS, 1, NEW, pretrain_model_uri=uri)
    pod = _pod(m)
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["models"]  # one volume per claim: the same claim twice never mounts
    (trainer,) = [c for c in pod["containers"] if c["name"] == "trainer"]
    (mount,) = [mt for mt in trainer["volumeMounts"] if mt["mountPath"] == "/mnt/base-model"]
    assert mount == {"name": "models", "mountPath": "/mnt/base-model", "readOnly": True}
    config = json.loads(ch.build_config_map(job, SETTINGS, uri)["data"]["config.json"])
    assert config["baseModel"] == "/mnt/base-model/pretrainjob/ml/gpt-small"


def test_serving_deployment_and_service() -> None:
    job = parse_job(ftj(serving={"replicas": 2, "port": 9000, "podTemplate": {"spec": {
        "containers": [{"name": "server", "env": [{"name": "X", "value": "1"}]}]}}}))  # fmt: skip
    dep = ch.build_serving_deployment(job, SETTINGS)
    assert dep["metadata"]["name"] == "sentiment-serve"
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:5] == [
        "python",
        "-m",
        "snowtrain.serve",
        "--model-dir",
        "/mnt/models/sentiment/v1",
    ]
    assert c["command"][c["command"].index("--port") + 1] == "9000"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "X", "value": "1"} in c["env"]
    models = next(m for m in c["volumeMounts"] if m["mountPath"] == "/mnt/models")
    assert models["readOnly"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    # Training selectors never match serving pods.
    assert "snowtrain.io/job" not in dep["spec"]["template"]["metadata"]["labels"]
    svc = ch.build_serving_service(job)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert ch.serving_endpoint(job) == "http://sentiment-serve.ml.svc:9000"
    kubernetes_validate.validate(dep, "1.25", strict=True)
    kubernetes_validate.validate(svc, "1.25", strict=True)
    assert "--quantize" not in c["command"]  # fp32 unless asked; the command stays as it was
    int8 = parse_job(ftj(serving={"quantize": "int8"}))
    command = ch.build_serving_deployment(int8, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["command"]  # fmt: skip
    assert command[command.index("--quantize") + 1] == "int8"
    # A serving edit changes the hash the reconcile compares to roll the Deployment.
    edited = parse_job(ftj(serving={"replicas": 3, "port": 9000}))
    assert (
        ch.build_serving_deployment(edited, SETTINGS)["metadata"]["annotations"]
        != dep["metadata"]["annotations"]
    )


def test_serving_auth_mounts_the_token_secret_and_points_the_server_at_it() -> None:
    """The token reaches the server as a file from the job's Secret (rotation without a
    restart), never as an env var or in the command line."""
    job = parse_job(ftj(serving={"auth": {"secretRef": {"name": "serve-token", "key": "t"}}}))
    pod = ch.build_serving_deployment(job, SETTINGS)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    vol = next(v for v in pod["volumes"] if v["name"] == "serve-auth")
    assert vol["secret"]["secretName"] == "serve-token"
    assert vol["secret"]["items"] == [{"key": "t", "path": "token"}]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "serve-auth")
    assert mount["readOnly"] is True
    token_file = c["command"][c["command"].index("--token-file") + 1]
    assert token_file == f"{mount['mountPath']}/token"
    assert not any("serve-token" in str(e) for e in c["env"])
    # Probes stay open (the server exempts them), so auth cannot make pods unready.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Without auth, no token flag: existing Deployments keep their spec hash.
    plain = parse_job(ftj())
    command = ch.build_serving_deployment(plain, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["command"]  # fmt: skip
    assert "--token-file" not in command


def test_network_policies_close_training_pods_to_all_but_their_job_and_serving_to_its_port() -> (
    None
):
    """Training pods: only their own job's pods may connect (rendezvous, collectives).
    Serving pods: only the serving port, from their namespace and the admin's extra peers."""
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    settings = SETTINGS.model_copy(update={"serving_ingress_from": [monitoring]})
    job = parse_job(ftj(resources={"nodes": 2}))
    training = ch.build_training_network_policy(job)
    manifest = ch.build_training_job(job, settings, 1, NEW, rendezvous_endpoint="10.96.0.7:29400")
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    selector = training["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()  # it selects this job's training pods
    assert training["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = training["spec"]["ingress"]
    assert rule == {"from": [{"podSelector": {"matchLabels": selector}}]}
    assert training["metadata"]["ownerReferences"][0]["uid"] == "u-1"

    serving = ch.build_serving_network_policy(job, settings)
    dep = ch.build_serving_deployment(job, settings)
    serving_pods = dep["spec"]["template"]["metadata"]["labels"]
    assert serving["spec"]["podSelector"]["matchLabels"].items() <= serving_pods.items()
    # Training and serving policies never select each other's pods.
    assert not selector.items() <= serving_pods.items()
    (rule,) = serving["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert rule["from"] == [{"podSelector": {}}, monitoring]
    for manifest in (training, serving):
        kubernetes_validate.validate(manifest, "1.25", strict=True)


def test_long_names_stay_valid_label_values() -> None:
    name = "x" * 63
    assert len(ch.job_name(name, 12)) <= 63
    assert ch.job_name(name, 12).endswith("-a12")
    assert ch.job_name(name, 1) != ch.job_name(name, 2)


def test_merge_pod_template_replaces_plain_lists_and_leaves_inputs_alone() -> None:
    base = {"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "t", "args": ["x"]}]}}
    out = ch.merge_pod_template(base, {"spec": {"tolerations": [{"key": "b"}], "containers": [
        {"name": "t", "args": ["y"]}]}})  # fmt: skip
    assert out["spec"]["tolerations"] == [{"key": "b"}]
    assert out["spec"]["containers"] == [{"name": "t", "args": ["y"]}]
    assert base["spec"]["containers"][0]["args"] == ["x"]
