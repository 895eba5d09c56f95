"""Across the Dockerfile, compose.yaml and k8s/: every command resolves to a real entry
point, every setting a service reads is given (and nothing the code does not know), and the
image, the commands and the ports agree."""

from __future__ import annotations

from typing import Any

import pytest

from services.cli.up import environment_of
from tests.test_deploy_render import (
    IMAGE,
    K8S,
    ROOT,
    SANDBOX_OVERLAY,
    STAND_INS,
    by_kind,
    compose_document,
    containers,
    dockerfile_stages,
    ferry_services,
    k8s_environment,
    module_of,
    provided,
    render,
    unresolved,
    variables_read,
)


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    return render(K8S)


def k8s_ferry_containers(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The containers that run a Ferry service, by module (services.<name>)."""
    return {
        c["command"][2]: c
        for c in containers(resources)
        if c["command"][:2] == ["python", "-m"] and c["command"][2] != STAND_INS
    }


def test_every_command_resolves_to_a_real_entry_point() -> None:
    compose = compose_document()
    commands = [s["command"] for s in compose["services"].values() if "command" in s]
    commands += [c["command"] for c in containers(render(SANDBOX_OVERLAY))]
    assert len(commands) >= 8
    for command in commands:
        assert unresolved(command) == [], command
    stages = dockerfile_stages()
    (cmd,) = [line for line in stages[-1] if line.startswith("CMD ")]
    assert cmd == 'CMD ["python", "-m", "services.task_tracker"]'


def test_every_setting_a_service_reads_is_given_in_compose_and_nothing_unknown() -> None:
    for name, service in ferry_services(compose_document()).items():
        module = module_of(service["command"])
        expected = variables_read(module)
        given = provided(set(environment_of(service)), expected)
        assert sorted(expected - given) == [], f"{name}: not given in compose.yaml"
        assert sorted(given - expected) == [], f"{name}: unknown to {module}"


def test_every_setting_a_service_reads_is_given_in_k8s_and_nothing_unknown(
    k8s: list[dict[str, Any]],
) -> None:
    found = k8s_ferry_containers(k8s)
    assert set(found) == {
        module_of(s["command"]) for s in ferry_services(compose_document()).values()
    }
    for module, container in found.items():
        expected = variables_read(module)
        given = provided(set(k8s_environment(k8s, container)), expected)
        assert sorted(expected - given) == [], f"{module}: not given in k8s/"
        assert sorted(given - expected) == [], f"{module}: unknown to it"


def test_k8s_runs_the_same_commands_and_the_same_settings_as_compose(
    k8s: list[dict[str, Any]],
) -> None:
    # The values may differ only where the place differs: the broker, the secrets (files in
    # k8s), the external endpoints (compose defaults to the stand-ins) and the database.
    differ = {
        "FERRY_AMQP_URL",
        "FERRY_DATABASE_URL",
        "FERRY_CREDENTIALS_FILE",
        "FERRY_WEBHOOK_SECRET",
        *compose_document()["x-sandbox-variables"],
    }
    found = k8s_ferry_containers(k8s)
    for service in ferry_services(compose_document()).values():
        module = module_of(service["command"])
        container = found[module]
        assert container["command"] == service["command"]
        compose_env = environment_of(service)
        k8s_env = k8s_environment(k8s, container)
        for variable, value in compose_env.items():
            if variable not in differ:
                assert k8s_env.get(variable) == value, (module, variable)


def test_image_and_ports_agree_across_dockerfile_compose_and_k8s(
    k8s: list[dict[str, Any]],
) -> None:
    stages = dockerfile_stages()
    runtime = stages[-1]
    assert "EXPOSE 8080" in runtime
    assert any("FERRY_HTTP_PORT=8080" in line for line in runtime if line.startswith("ENV"))
    compose = compose_document()
    for service in ferry_services(compose).values():
        assert service["image"].split(":")[0] == IMAGE
        assert environment_of(service)["FERRY_HTTP_PORT"] == "8080"
    for container in containers(k8s):
        assert container["image"].split(":")[0] == IMAGE
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    gateway_env = environment_of(compose["services"]["gateway"])
    (gateway,) = [c for c in containers(k8s) if c["name"] == "gateway"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["grpc"] == int(gateway_env["FERRY_GRPC_PORT"]) == 8443
    assert ports["webhook"] == int(gateway_env["FERRY_WEBHOOK_PORT"]) == 8444
    service = by_kind(k8s, "Service")["gateway"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8443, 8444}


def test_the_dockerfile_builds_one_slim_non_root_image_without_build_or_test_tools() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2  # multi-stage
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    runtime = stages[-1]
    assert runtime[0].startswith("FROM ${PYTHON_IMAGE} AS runtime")
    assert any(line.startswith("USER 10001") for line in runtime)
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in runtime)
    run_lines = " ".join(line for line in runtime if line.startswith("RUN "))
    assert "pip uninstall -y pip setuptools wheel" in run_lines
    for forbidden in ("apt-get install", "gcc", "build-essential", "[dev]", "pip install"):
        assert forbidden not in run_lines, forbidden
    copies = [line for line in runtime if line.startswith("COPY ")]
    assert copies == ["COPY --from=build /opt/ferry /opt/ferry"]
    assert not any("[dev]" in line for stage in stages for line in stage)
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignored[:1] == ["*"]  # everything out, then only what the image needs back in
    assert {"!pyproject.toml", "!README.md", "!shared/", "!services/"} <= set(ignored)
