"""The deployment files, checked without a Docker engine (none runs on these machines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_has_the_three_services_with_their_profiles(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"api", "api-gpu", "train"}
    assert "profiles" not in services["api"]  # the default `docker compose up`
    assert services["api-gpu"]["profiles"] == ["gpu"]
    assert services["train"]["profiles"] == ["train"]


@pytest.mark.parametrize("name", ["api", "api-gpu"])
def test_api_services_mount_models_read_only_and_check_readiness(compose: dict, name: str) -> None:
    service = compose["services"][name]
    mounts = [v for v in service["volumes"] if v["target"] == "/models"]
    assert mounts and all(v["read_only"] is True for v in mounts)
    check = " ".join(service["healthcheck"]["test"])
    assert "/readyz" in check
    assert service["environment"]["SARING_MODEL_DIR"].startswith("/models/")


def test_gpu_service_reserves_an_nvidia_device(compose: dict) -> None:
    devices = compose["services"]["api-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert compose["services"]["api-gpu"]["environment"]["SARING_DEVICE"] == "cuda"


def test_train_job_writes_into_the_models_folder(compose: dict) -> None:
    train = compose["services"]["train"]
    mount = next(v for v in train["volumes"] if v["target"] == "/models")
    assert not mount.get("read_only", False)
    assert train["command"][0] == "train"
    assert any(arg.startswith("--output_dir=") and "/models/" in arg for arg in train["command"])
    assert train["restart"] == "no"


def test_every_setting_in_compose_exists(compose: dict) -> None:
    """A typo in an environment name would silently fall back to a default."""
    fields = {f"SARING_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "api-gpu"):
        for key in compose["services"][name]["environment"]:
            assert key in fields, f"{name}: {key} is not a saring setting"


def test_dockerfile_is_multi_stage_non_root_with_cpu_torch_default() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM .* AS (\S+)", text, flags=re.M)
    assert {"build", "api", "train"} <= set(stages)
    assert re.search(r"^ARG TORCH_FLAVOUR=cpu$", text, flags=re.M)
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and "root" not in users
    assert "HEALTHCHECK" in text and "/readyz" in text


def test_readme_commands_are_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    assert "make test" in ci


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"SARING_{name.upper()}" for name in Settings.model_fields if f"`SARING_{name.upper()}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}"
