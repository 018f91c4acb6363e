"""deploy/k8s/mining: the Indexed Job that mines exemplar-index shards onto a shared
volume validates against the Kubernetes schemas (offline), and its pods run what the
real `python -m sagex.activation.mine` parser accepts: worker = completion index,
--workers = completions (at most the serving config's mining_shards, so every pod has
shards to mine), with the serving config and a ReadWriteMany cache."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy._files import K8S, UID, find, yaml_documents

MINING = K8S / "mining"
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((MINING / "kustomization.yaml").read_text())
    assert {p.name for p in MINING.glob("*.yaml")} - {"kustomization.yaml"} == set(kustomization["resources"])
    return [doc for resource in kustomization["resources"] for doc in yaml_documents(MINING / resource)]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_mining_job_matches_the_kubernetes_schema(objects: list[dict[str, Any]], version: str) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_each_pod_is_the_worker_of_its_completion_index(objects: list[dict[str, Any]]) -> None:
    import tomllib

    from sagex.activation.mine import build_parser
    from sagex.activation.shards import worker_shards

    job = find(objects, "Job", "sage-mine")["spec"]
    assert job["completionMode"] == "Indexed" and job["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "sagex.activation.mine"]
    env = {e["name"]: e for e in container.get("env", [])}
    seen = set()
    for index in range(job["completions"]):
        # What the kubelet does with $(VAR) in args: the pod's completion index goes in.
        argv = [a.replace("$(SAGE_WORKER)", str(index)) for a in container["args"]]
        args = build_parser().parse_args(argv)
        assert args.workers == job["completions"] and args.merge, "the last worker to finish merges"
        seen.add(args.worker)
    assert seen == set(range(job["completions"]))
    configmaps = {d["metadata"]["name"]: d for d in yaml_documents(K8S / "configmaps.yaml") if d["kind"] == "ConfigMap"}
    activation_toml = configmaps["sage-activation-config"]["data"]["activation.toml"]
    shards = tomllib.loads(activation_toml)["activation"]["mining_shards"]
    assert all(worker_shards(shards, w, job["completions"]) for w in range(job["completions"])), "no idle pod"
    assert sorted(sum((worker_shards(shards, w, job["completions"]) for w in range(job["completions"])), [])) == \
        list(range(shards)), "every shard has a worker"
    field = env["SAGE_WORKER"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_pods_share_the_cache_and_the_serving_config(objects: list[dict[str, Any]]) -> None:
    from sagex.activation.mine import build_parser

    pod = find(objects, "Job", "sage-mine")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    claim = volumes[mounts["/var/cache/sagex"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert "ReadWriteMany" in find(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"]
    config = build_parser().parse_args([a.replace("$(SAGE_WORKER)", "0") for a in container["args"]]).config
    assert volumes[mounts[config]["name"]]["configMap"]["name"] == "sage-activation-config"
    configmaps = [d for d in yaml_documents(K8S / "configmaps.yaml") if d["kind"] == "ConfigMap"]
    assert "sage-activation-config" in {c["metadata"]["name"] for c in configmaps}
    assert pod["securityContext"]["runAsUser"] == UID and container["securityContext"]["readOnlyRootFilesystem"]
