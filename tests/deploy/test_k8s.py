"""deploy/k8s: every object validates against the Kubernetes schemas
(kubernetes-validate, offline), and the invariants that matter hold: ports,
`sage serve` arguments the real CLI accepts, native gRPC probes on the health
names the servers register, ConfigMaps the real loaders accept and that carry
no secrets, the headless Service and the agent's target that uses it, the HPA
on the metric the activation service really exports, non-root read-only pods."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sagex.server.lifecycle import LIVENESS
from tests.deploy._files import K8S, SERVICES, UID, find, k8s_objects, parse_serve, service_facts, yaml_documents

# Native gRPC probes are GA since 1.27; validate against it and the newest schemas the package carries.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Names that hold secrets: api_key, OPENAI_API_KEY, auth_tokens, SAGE_TOKEN, password, ...
SECRETISH = re.compile(r"(^|_)(api_?key|key|tokens?|secret|password|credentials?)($|_)", re.IGNORECASE)


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return k8s_objects()


def _namespace() -> str:
    return str(yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"])


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = find(objects, "Deployment", f"sage-{name}")["spec"]["template"]["spec"]["containers"]
    return container


def _configmap_toml(objects: list[dict[str, Any]], name: str) -> tuple[str, dict[str, Any]]:
    text = find(objects, "ConfigMap", f"sage-{name}-config")["data"][f"{name}.toml"]
    return text, tomllib.loads(text)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(objects: list[dict[str, Any]], version: str) -> None:
    for obj in [*objects, *yaml_documents(K8S / "secret.example.yaml")]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    assert "secret.example.yaml" not in listed  # never overwrite a real Secret with the example


def test_cpu_overlay_patches_paths_that_exist(objects: list[dict[str, Any]]) -> None:
    overlay = yaml.safe_load((K8S / "overlays" / "cpu" / "kustomization.yaml").read_text())
    assert (K8S / "overlays" / "cpu" / overlay["resources"][0] / "kustomization.yaml").resolve().is_file()
    deployment = find(objects, "Deployment", "sage-activation")
    for patch in overlay["patches"]:
        for op in yaml.safe_load(patch["patch"]):
            node: Any = deployment
            for part in op["path"].strip("/").split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
    images = {i["name"]: i["newName"] for i in overlay["images"]}
    assert images == {"sage-activation-cuda": "sage-activation"}


@pytest.mark.parametrize("name", SERVICES)
def test_container_serves_its_service_with_grpc_probes(objects: list[dict[str, Any]], name: str) -> None:
    facts = service_facts()[name]
    container = _container(objects, name)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == facts.port
    args = parse_serve(container["args"])
    assert (args.command, args.service, args.port, args.host) == ("serve", name, facts.port, "0.0.0.0")
    # Readiness: the service's own health name (NOT_SERVING until loaded, and while draining).
    assert container["readinessProbe"]["grpc"] == {"port": facts.port, "service": facts.health_name}
    # Liveness and startup: the health service's own name, SERVING once the port is bound
    # ("" waits for the model like readiness, and would restart a pod still loading).
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["grpc"].get("service") == LIVENESS, probe
        assert container[probe]["grpc"]["port"] == facts.port, probe


@pytest.mark.parametrize("name", SERVICES)
def test_configmap_loads_and_is_mounted_where_the_args_point(objects: list[dict[str, Any]], name: str,
                                                             tmp_path: Path) -> None:
    facts = service_facts()[name]
    text, data = _configmap_toml(objects, name)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    overrides: dict[str, Any] = {"model": None} if name == "activation" else {}
    config = facts.config_cls.from_toml(path, **overrides)
    container = _container(objects, name)
    config_arg = parse_serve(container["args"]).config
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[config_arg]["subPath"] == f"{name}.toml" and mounts[config_arg]["readOnly"] is True
    # Metrics: the configured port is the container port named "metrics" and the scrape annotation.
    template = find(objects, "Deployment", f"sage-{name}")["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert config.server.metrics_port == ports["metrics"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    # Auth: a pod binds 0.0.0.0, so the server must have tokens, from the mounted Secret.
    tokens_file = Path(data[name]["server"]["auth_tokens_file"])
    secret_volume = _secret_volume(template)
    assert mounts[str(tokens_file.parent)]["name"] == secret_volume["name"]
    assert tokens_file.name in {item["path"] for item in secret_volume["secret"]["items"]}
    assert secret_volume["secret"].get("optional", False) is False


def _secret_volume(template: dict[str, Any]) -> dict[str, Any]:
    (volume,) = [v for v in template["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "sage-secrets"
    return volume


def test_configmaps_hold_no_secret_values(objects: list[dict[str, Any]]) -> None:
    def walk(table: dict[str, Any], where: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{where}.{key}")
            elif isinstance(value, str) and SECRETISH.search(key):
                # Only the *name* of a variable or the *path* of a mounted file may appear.
                assert key.endswith(("_env", "_file")), f"{where}.{key} looks like an inline secret"
    for obj in objects:
        if obj["kind"] != "ConfigMap":
            continue
        for filename, text in obj["data"].items():
            walk(tomllib.loads(text), f"{obj['metadata']['name']}/{filename}")
            assert not re.search(r"\bsk-[A-Za-z0-9]{8,}", text)


def test_secrets_reach_containers_only_by_reference(objects: list[dict[str, Any]]) -> None:
    for name in SERVICES:
        for env in _container(objects, name).get("env", []):
            if "value" in env:
                assert env["name"].endswith("_FILE") or not SECRETISH.search(env["name"]), env
            else:
                assert env["valueFrom"]["secretKeyRef"]["name"] == "sage-secrets"
    for name in ("agent", "scoring"):
        env = {e["name"]: e for e in _container(objects, name)["env"]}
        assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "sage-secrets", "key": "OPENAI_API_KEY", "optional": True}
        # What the service presents to the others: a file of the mounted Secret.
        template = find(objects, "Deployment", f"sage-{name}")["spec"]["template"]
        token_file = Path(env["SAGE_TOKEN_FILE"]["value"])
        assert token_file.name in {item["path"] for item in _secret_volume(template)["secret"]["items"]}
    example = yaml_documents(K8S / "secret.example.yaml")[0]
    assert all(value == "" for value in example["stringData"].values())
    items = {item["key"] for name in SERVICES for item in
             _secret_volume(find(objects, "Deployment", f"sage-{name}")["spec"]["template"])["secret"]["items"]}
    assert items <= set(example["stringData"])


@pytest.mark.parametrize("name", SERVICES)
def test_pods_run_non_root_with_a_read_only_root(objects: list[dict[str, Any]], name: str) -> None:
    spec = find(objects, "Deployment", f"sage-{name}")["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID and pod["runAsGroup"] == UID
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    container = _container(objects, name)["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    # With the root FS read-only, every folder the image writes to must be a volume.
    mounts = {m["mountPath"] for m in _container(objects, name)["volumeMounts"]}
    assert {"/tmp", "/var/cache/sagex"} <= mounts


def test_activation_gets_a_gpu(objects: list[dict[str, Any]]) -> None:
    container = _container(objects, "activation")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container["resources"].get("requests", {})  # limits-only
    assert container["image"].startswith("sage-activation-cuda:")


def test_headless_service_selects_the_activation_pods(objects: list[dict[str, Any]]) -> None:
    service = find(objects, "Service", "sage-activation-headless")["spec"]
    assert service["clusterIP"] == "None"
    labels = find(objects, "Deployment", "sage-activation")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] == "grpc" and port["port"] == service_facts()["activation"].port


def test_agent_and_scoring_target_the_headless_service(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    port = service_facts()["activation"].port
    target = f"dns:///sage-activation-headless.{_namespace()}.svc.cluster.local:{port}"
    for name in ("agent", "scoring"):
        text, _ = _configmap_toml(objects, name)
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        config = service_facts()[name].config_cls.from_toml(path)  # the loader accepts a dns:/// target
        assert list(config.activation) == [target]
    _, scoring = _configmap_toml(objects, "scoring")
    agent_port = find(objects, "Service", "sage-agent")["spec"]["ports"][0]["port"]
    assert scoring["scoring"]["agent"] == f"sage-agent.{_namespace()}.svc.cluster.local:{agent_port}"


def test_hpa_scales_activation_on_the_exported_queue_metric(objects: list[dict[str, Any]]) -> None:
    from sagex.activation.batcher import QUEUE_TEXTS

    exported = QUEUE_TEXTS.describe()[0].name  # the gauge the activation server serves on /metrics
    hpa = find(objects, "HorizontalPodAutoscaler", "sage-activation")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sage-activation"}
    find(objects, "Deployment", "sage-activation")
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == exported
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    rules = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = rules["rules"]["custom"]
    assert rule["seriesQuery"].startswith(exported + "{") and rule["name"]["as"] == exported


def test_scoring_keeps_its_operations_on_a_volume(objects: list[dict[str, Any]]) -> None:
    deployment = find(objects, "Deployment", "sage-scoring")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    mounts = {m["mountPath"]: m["name"] for m in _container(objects, "scoring")["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    find(objects, "PersistentVolumeClaim", volumes[mounts["/var/cache/sagex"]]["persistentVolumeClaim"]["claimName"])


def test_agent_keeps_one_replica_on_its_volume(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    deployment = find(objects, "Deployment", "sage-agent")["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    text, _ = _configmap_toml(objects, "agent")
    path = tmp_path / "agent.toml"
    path.write_text(text)
    database = service_facts()["agent"].config_cls.from_toml(path).database
    mounts = {m["mountPath"]: m["name"] for m in _container(objects, "agent")["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    claim = volumes[mounts[str(Path(database).parent)]]["persistentVolumeClaim"]["claimName"]
    find(objects, "PersistentVolumeClaim", claim)


def test_grace_period_outlasts_the_servers_drain(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    for name in SERVICES:
        text, _ = _configmap_toml(objects, name)
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        overrides: dict[str, Any] = {"model": None} if name == "activation" else {}
        server = service_facts()[name].config_cls.from_toml(path, **overrides).server
        grace = find(objects, "Deployment", f"sage-{name}")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > server.drain_seconds + server.grace_seconds, name
