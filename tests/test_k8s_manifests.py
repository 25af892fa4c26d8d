"""deploy/k8s/: schema-valid for Kubernetes (kubernetes-validate, strict, offline), and true to the service:
real settings, real probe routes and metric, a shutdown that fits its grace period."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client import generate_latest

from service.metrics import ServiceMetrics
from service.settings import Settings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"  # the newest schemas kubernetes-validate ships; all these APIs are GA since 1.23
FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def by_kind(kind: str) -> list[dict]:
    return [d for p in FILES for d in docs(p) if d["kind"] == kind]


def deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in by_kind("Deployment")}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_manifests_are_schema_valid_in_strict_mode(path: Path) -> None:
    for doc in docs(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any unknown or wrong field


def test_strict_validation_catches_a_typo() -> None:
    """The check above can fail: a misspelt field is refused."""
    doc = docs(K8S / "deployment-cpu.yaml")[0]
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in FILES if p.name != "secret.example.yaml")


def test_every_saring_variable_is_a_real_setting() -> None:
    settings = {f"SARING_{name.upper()}" for name in Settings.model_fields}
    names = set()
    for config in by_kind("ConfigMap"):
        names |= set(config["data"])
    for secret in by_kind("Secret"):
        names |= set(secret["stringData"])
    for deployment in deployments().values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    saring = {n for n in names if n.startswith("SARING_")}
    assert saring - settings == set(), f"not saring settings: {sorted(saring - settings)}"
    secret = set(by_kind("Secret")[0]["stringData"])
    assert {"SARING_FLOOD_REDIS_URL", "SARING_FEEDBACK_DB_URL", "SARING_API_KEYS"} <= secret


@pytest.mark.parametrize("name", ["saring-cpu", "saring-gpu"])
def test_replicas_probe_drain_and_mount_as_the_service_expects(name: str) -> None:
    deployment = deployments()[name]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # covers loading and warming the model
    # preStop sleep, then saring's drain and graceful shutdown, all inside the grace period.
    config = by_kind("ConfigMap")[0]["data"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    needed = pre_stop + float(config["SARING_DRAIN_S"]) + float(config["SARING_GRACEFUL_SHUTDOWN_S"])
    assert pod["terminationGracePeriodSeconds"] >= needed
    # The model read-only from a volume; keys and URLs from the Secret.
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert config["SARING_MODEL_DIR"].startswith("/models/")
    assert {"secretRef": {"name": "saring-secrets"}} in container["envFrom"]
    assert container["ports"][0]["containerPort"] == int(config["SARING_PORT"])
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    device = {e["name"]: e["value"] for e in container["env"]}["SARING_DEVICE"]
    assert (gpus, device) == ((1, "cuda") if name == "saring-gpu" else (None, "cpu"))


def test_one_service_and_one_disruption_budget_cover_both_deployments() -> None:
    (service,) = by_kind("Service")
    (budget,) = by_kind("PodDisruptionBudget")
    for deployment in deployments().values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_autoscalers_watch_in_flight_requests_with_cpu_as_a_floor() -> None:
    exported = generate_latest(ServiceMetrics().registry).decode()
    scaled = set()
    for hpa in by_kind("HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        scaled.add(hpa["spec"]["scaleTargetRef"]["name"])
        pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        cpu = [m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
        assert [p["metric"]["name"] for p in pods] == ["saring_inflight_requests"]
        assert f"\n{pods[0]['metric']['name']} " in exported  # a gauge /metrics really exports
        assert [c["name"] for c in cpu] == ["cpu"]
    assert scaled == set(deployments())
