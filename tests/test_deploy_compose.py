"""compose.yaml: valid Compose, and what the issue asks of it (healthchecks, dependencies,
settings from .env, volumes, the gateway's ports and secret, the sandbox profile)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from compose_spec import PyCompose

from services.cli.up import SANDBOX_VARIABLES, container_ports, environment_of, variables_of
from tests.test_deploy_render import COMPOSE, ROOT, compose_document, ferry_services, module_of

ENV_EXAMPLE = ROOT / ".env.example"
SECRET_NAMES = re.compile(r"(PASSWORD|TOKEN|SECRET)$")


def test_compose_is_valid_against_the_compose_specification() -> None:
    # compose-spec's parser (the Rust `compose_spec` crate) rejects unknown keys, wrong types
    # and bad values; its Pydantic models are generated from the specification's schema.
    # Anchors and merge keys are resolved first, as `docker compose` does.
    document = compose_document()
    parsed = PyCompose.from_json(json.dumps(document))
    spec = parsed.to_spec()
    assert spec.services is not None
    assert set(spec.services) == set(document["services"])


def test_the_compose_validator_rejects_a_typo() -> None:
    document = compose_document()
    document["services"]["task_tracker"]["depends_onn"] = {}
    with pytest.raises(ValueError, match="depends_onn"):
        PyCompose.from_json(json.dumps(document))


def test_every_service_waits_for_a_healthy_broker_and_every_dependency_exists() -> None:
    compose = compose_document()
    services = compose["services"]
    for name, service in ferry_services(compose).items():
        depends = service["depends_on"]
        assert depends["rabbitmq"] == {"condition": "service_healthy"}, name
        for target, condition in depends.items():
            assert target in services, (name, target)
            assert condition["condition"] == "service_healthy", (name, target)
            # Waiting for health needs a check: the image's HEALTHCHECK or the service's own.
            assert "healthcheck" in services[target] or target in ferry_services(compose)
    assert services["task_tracker"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["rabbitmq"]["image"].startswith("rabbitmq:4.")
    assert services["rabbitmq"]["image"].endswith("-management")
    for infrastructure in ("rabbitmq", "postgres", "sandbox"):
        assert services[infrastructure]["healthcheck"]["test"][0] == "CMD", infrastructure


def test_the_tracker_uses_postgresql_and_the_data_lives_on_volumes() -> None:
    compose = compose_document()
    services = compose["services"]
    assert environment_of(services["task_tracker"])["FERRY_DATABASE_URL"].startswith(
        "postgresql://ferry:ferry@postgres:5432/"
    )
    mounts = {
        name: {str(v).split(":")[0]: str(v).split(":")[1] for v in s.get("volumes", [])}
        for name, s in services.items()
    }
    assert mounts["postgres"]["tracker-db"] == "/var/lib/postgresql/data"
    for name, volume in (("workspace_store", "workspaces"), ("nlu_models", "models")):
        target = mounts[name][volume]
        assert environment_of(services[name])["FERRY_DATA_DIR"] == target, name
    assert set(compose["volumes"]) == {"rabbitmq-data", "tracker-db", "workspaces", "models"}


def test_the_gateway_serves_grpc_on_8443_with_its_credentials_as_a_secret() -> None:
    compose = compose_document()
    gateway = compose["services"]["gateway"]
    env = environment_of(gateway)
    assert env["FERRY_GRPC_PORT"] == "8443"
    assert env["FERRY_WEBHOOK_PORT"] == "8444"
    assert {8080, 8443, 8444} <= set(container_ports(gateway))
    assert gateway["secrets"] == ["gateway-mtls"]
    assert env["FERRY_CREDENTIALS_FILE"] == "/run/secrets/gateway-mtls"
    assert compose["secrets"]["gateway-mtls"]["file"] == "./certs/mtls-credentials.json"
    published = {str(p).rsplit(":", 1)[-1] for p in gateway["ports"]}
    assert published == {"8443", "8444"}


def test_the_sandbox_profile_runs_the_stand_ins_and_the_defaults_point_at_them() -> None:
    compose = compose_document()
    services = compose["services"]
    sandbox = services["sandbox"]
    assert sandbox["profiles"] == ["sandbox"]
    assert container_ports(sandbox) == [9101, 9102, 9103]
    assert not any(s.get("profiles") for n, s in services.items() if n != "sandbox")
    pointed = {
        key: value
        for service in ferry_services(compose).values()
        for key, value in environment_of(service).items()
        if "://sandbox:" in value
    }
    assert set(pointed) == {
        "FERRY_HF_ENDPOINT",
        "FERRY_HF_VIEWER_URL",
        "FERRY_AIOD_API_URL",
        "FERRY_AIOD_AUTH_URL",
        "FERRY_OPENHEXA_URL",
    }
    assert set(pointed) < set(compose[SANDBOX_VARIABLES])
    for name in ("hf_collector", "aiod_uploader", "openhexa_launcher"):
        # Started after the stand-ins with the profile, and without them when it is off.
        assert services[name]["depends_on"]["sandbox"]["required"] is False


def test_env_example_lists_every_variable_compose_reads_and_no_real_secret() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    used: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, str):
            used.update(variables_of(node))
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(raw)
    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name] = value
    assert set(example) == used
    for name, value in example.items():
        if SECRET_NAMES.search(name) and name != "FERRY_WEBHOOK_SECRET":
            assert value == "CHANGE_ME", name
    assert example["FERRY_WEBHOOK_SECRET"] == ""
    # .env holds the real values and never enters the image or the repository.
    assert (
        ".env" in (ROOT / ".dockerignore").read_text().split()
        or "*" in (ROOT / ".dockerignore").read_text().split()
    )


def test_every_ferry_service_runs_from_the_one_image() -> None:
    compose = compose_document()
    services = ferry_services(compose)
    assert {s["image"] for s in services.values()} == {"ferry:latest"}
    assert compose["services"]["sandbox"]["image"] == "ferry:latest"
    assert [n for n, s in services.items() if "build" in s] == ["task_tracker"]
    modules = {module_of(s["command"]).removeprefix("services.") for s in services.values()}
    assert modules == set(services)
