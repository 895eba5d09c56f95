"""What the deployment files say, read the way their tools read them (no Docker, no kubectl,
no kustomize here): compose.yaml interpolated with its defaults, k8s/ rendered from its
kustomizations, the Dockerfile's final stage. Shared by tests/test_deploy_*.py, with the
checks of the renderers themselves."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from services.cli.up import environment_of, read_compose, runs_locally
from shared.settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "k8s"
SANDBOX_OVERLAY = K8S / "overlays" / "sandbox"
FILE_SUFFIX = "_FILE"
IMAGE = "ferry"  # the one image's name in compose (ferry:TAG) and k8s (kustomize `images`)
BUILT_IN_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"}


# -- compose ---------------------------------------------------------------------------------


def compose_document() -> dict[str, Any]:
    """compose.yaml with every variable at its default (no .env, empty environment)."""
    return read_compose(COMPOSE, environ={})


STAND_INS = "services.sandbox"


def ferry_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run a Ferry service (`python -m services.<name>`), not the
    stand-ins (`python -m services.sandbox`), which read no Ferry settings."""
    return {
        name: service
        for name, service in compose["services"].items()
        if runs_locally(service)
        and service["command"][1] == "-m"
        and service["command"][2] != STAND_INS
    }


def module_of(command: list[str]) -> str:
    """`services.task_tracker` of `python -m services.task_tracker`."""
    assert command[:2] == ["python", "-m"], command
    return command[2]


# -- settings the code reads -----------------------------------------------------------------


def settings_class(module: str) -> type[BaseSettings]:
    """The settings class of `services.<name>` (its settings.py's BaseSettings subclass);
    BaseSettings itself for a service that has none."""
    name = f"{module}.settings"
    if importlib.util.find_spec(name) is None:
        return BaseSettings
    found = [
        value
        for value in vars(importlib.import_module(name)).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value is not BaseSettings
        and value.__module__ == name
    ]
    assert len(found) == 1, f"{name}: one BaseSettings subclass expected, found {found}"
    return found[0]


def variables_read(module: str) -> set[str]:
    return {f"FERRY_{f.name.upper()}" for f in dataclasses.fields(settings_class(module))}


def provided(names: set[str], known: set[str]) -> set[str]:
    """Environment names as the settings they give: FERRY_X_FILE gives FERRY_X, unless the
    setting's own name ends in _FILE (FERRY_CREDENTIALS_FILE is a path, given as is)."""
    return {
        name if name in known or not name.endswith(FILE_SUFFIX) else name[: -len(FILE_SUFFIX)]
        for name in names
    }


# -- k8s -------------------------------------------------------------------------------------


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        if document:
            yield document


def render(directory: Path) -> list[dict[str, Any]]:
    """A minimal `kustomize build`: resources (files or directories with their own
    kustomization), then patches (merged into the resource of the same kind and name:
    mappings merged, everything else replaced), then namespace and images."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        resources += render(target) if target.is_dir() else list(_documents(target))
    for patch in kustomization.get("patches", []):
        for change in _documents(directory / patch["path"]):
            matches = [r for r in resources if key(r) == key(change)]
            assert len(matches) == 1, f"{patch['path']}: patches {key(change)}, found {matches}"
            _merge(matches[0], change)
    namespace = kustomization.get("namespace")
    for resource in resources:
        if namespace and resource["kind"] != "Namespace":
            resource["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for container in containers(resources):
            if container["image"] == image["name"]:
                container["image"] = f"{image['newName']}:{image['newTag']}"
    return resources


def _merge(into: dict[str, Any], change: dict[str, Any]) -> None:
    for name, value in change.items():
        if isinstance(value, dict) and isinstance(into.get(name), dict):
            _merge(into[name], value)
        else:
            into[name] = copy.deepcopy(value)


def key(resource: dict[str, Any]) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def containers(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for deployment in by_kind(resources, "Deployment").values():
        yield from deployment["spec"]["template"]["spec"]["containers"]


def k8s_environment(resources: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its envFrom ConfigMaps in order, then its env."""
    config_maps = by_kind(resources, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", "")
    return env


# -- Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


# -- commands --------------------------------------------------------------------------------


def unresolved(command: list[str]) -> list[str]:
    """What in a `python -m MODULE` or `python -c CODE` command does not exist in the code."""
    assert command[0] == "python", command
    if command[1] == "-m":
        try:
            found = importlib.util.find_spec(f"{command[2]}.__main__")
        except ModuleNotFoundError:  # its package is missing too
            found = None
        return [] if found else [command[2]]
    assert command[1] == "-c", command
    tree = ast.parse(command[2])
    missing: list[str] = []
    imported: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if value is None and importlib.util.find_spec(f"{node.module}.{alias.name}"):
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                if value is None:
                    missing.append(f"{node.module}.{alias.name}")
                imported[alias.asname or alias.name] = value
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported
            and not hasattr(imported[node.value.id], node.attr)
        ):
            missing.append(f"{node.value.id}.{node.attr}")
    return missing


# -- the renderers' own checks ---------------------------------------------------------------


def test_render_merges_patches_and_applies_namespace_and_images() -> None:
    base = render(K8S)
    overlay = render(SANDBOX_OVERLAY)
    assert {key(r) for r in base} < {key(r) for r in overlay}
    assert all(r["metadata"].get("namespace") == "ferry" for r in base if r["kind"] != "Namespace")
    images = {c["image"] for c in containers(base)}
    assert images == {"ferry:0.1.0"}
    patched = by_kind(overlay, "ConfigMap")["ferry-hf-collector"]["data"]
    unpatched = by_kind(base, "ConfigMap")["ferry-hf-collector"]["data"]
    assert patched["FERRY_HF_ENDPOINT"] == "http://sandbox:9101"
    assert unpatched["FERRY_HF_ENDPOINT"] == "https://huggingface.co"
    assert patched["FERRY_PAGE_SIZE"] == unpatched["FERRY_PAGE_SIZE"]  # merged, not replaced


def test_unresolved_finds_what_a_command_names_and_the_code_lacks() -> None:
    assert unresolved(["python", "-m", "services.task_tracker"]) == []
    assert unresolved(["python", "-m", "services.nope"]) == ["services.nope"]
    code = "from services.sandbox import server; server.no_such_thing()"
    assert unresolved(["python", "-c", code]) == ["server.no_such_thing"]


def test_settings_class_finds_each_services_own() -> None:
    assert settings_class("services.task_tracker").__name__ == "TrackerSettings"
    assert "FERRY_DATABASE_URL" in variables_read("services.task_tracker")
    known = {"FERRY_AMQP_URL", "FERRY_CREDENTIALS_FILE"}
    given = {"FERRY_AMQP_URL_FILE", "FERRY_CREDENTIALS_FILE", "FERRY_X"}
    assert provided(given, known) == {"FERRY_AMQP_URL", "FERRY_CREDENTIALS_FILE", "FERRY_X"}
    assert environment_of({"environment": ["A=1", "B"]}) == {"A": "1", "B": ""}
