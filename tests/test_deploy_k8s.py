"""k8s/: the built-in kinds pass `kubernetes-validate --strict` (offline, its own schemas),
the custom resources carry their required fields, and every Deployment has what the issue
asks: probes, resources, a non-root read-only securityContext, a PDB, a metrics Service, and
KEDA scaling for the workers; plus the sandbox overlay."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.test_deploy_render import (
    BUILT_IN_GROUPS,
    K8S,
    SANDBOX_OVERLAY,
    by_kind,
    containers,
    k8s_environment,
    render,
)

SCALED_WORKERS = {"hf-collector", "aiod-uploader", "openhexa-launcher", "nlu-models"}
# Peak RSS measured by bench/sync.py and bench/models.py (k8s/README.md): limits leave room.
MEMORY_BUDGET_MIB = {"hf-collector": 150, "aiod-uploader": 150}


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity) / (1 << 20)


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    return render(K8S)


@pytest.mark.parametrize("directory", [K8S, SANDBOX_OVERLAY], ids=["base", "sandbox"])
def test_built_in_kinds_pass_kubernetes_validate_strict(directory: Any) -> None:
    version = kubernetes_validate.utils.latest_version()
    checked = 0
    for resource in render(directory):
        if resource["apiVersion"] in BUILT_IN_GROUPS:
            kubernetes_validate.validate(resource, version, strict=True)
            checked += 1
    assert checked > 20


def test_custom_resources_carry_their_required_fields(resources: list[dict[str, Any]]) -> None:
    custom = [r for r in resources if r["apiVersion"] not in BUILT_IN_GROUPS]
    assert {r["kind"] for r in custom} == {
        "RabbitmqCluster",
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
    }
    rabbitmq = by_kind(resources, "RabbitmqCluster")["ferry-rabbitmq"]
    assert rabbitmq["apiVersion"] == "rabbitmq.com/v1beta1"
    assert rabbitmq["spec"]["replicas"] == 3
    assert rabbitmq["spec"]["image"].startswith("rabbitmq:4.")
    deployments = by_kind(resources, "Deployment")
    authentications = by_kind(resources, "TriggerAuthentication")
    secrets = by_kind(resources, "Secret")
    for name, scaled in by_kind(resources, "ScaledObject").items():
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled["spec"]["scaleTargetRef"]["name"] in deployments, name
        assert scaled["spec"]["triggers"], name
        module = deployments[name]["spec"]["template"]["spec"]["containers"][0]["command"][2]
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["type"] == "rabbitmq"
            meta = trigger["metadata"]
            assert meta["mode"] == "QueueLength" and int(meta["value"]) > 0
            assert meta["queueName"].startswith("ferry." + module.removeprefix("services.") + ".")
            assert trigger["authenticationRef"]["name"] in authentications
    for authentication in authentications.values():
        for ref in authentication["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
    monitor = by_kind(resources, "ServiceMonitor")["ferry"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        s
        for s in by_kind(resources, "Service").values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(selected) == len(deployments)
    ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
    assert ports == {e["port"] for e in monitor["spec"]["endpoints"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_every_deployment_is_probed_bounded_non_root_and_disruption_budgeted(
    resources: list[dict[str, Any]],
) -> None:
    pdbs = by_kind(resources, "PodDisruptionBudget")
    services = by_kind(resources, "Service")
    for name, deployment in by_kind(resources, "Deployment").items():
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        assert spec["terminationGracePeriodSeconds"] > 15, name  # > FERRY_GRACEFUL_TIMEOUT
        (container,) = spec["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert mebibytes(requests["memory"]) <= mebibytes(limits["memory"]), name
        assert "cpu" in requests, name
        if name in MEMORY_BUDGET_MIB:
            assert mebibytes(requests["memory"]) >= MEMORY_BUDGET_MIB[name], name
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert [p for p in pdbs.values() if selects(p["spec"]["selector"]["matchLabels"], labels)]
        metrics = [s for s in services.values() if s["spec"]["selector"] == labels]
        assert any(p["port"] == 8080 for s in metrics for p in s["spec"]["ports"]), name
        assert k8s_environment(resources, container)["FERRY_HTTP_PORT"] == "8080", name


def test_workers_scale_on_queues_and_the_tracker_runs_two_replicas_on_postgresql(
    resources: list[dict[str, Any]],
) -> None:
    scaled = by_kind(resources, "ScaledObject")
    assert set(scaled) == {*SCALED_WORKERS, "task-tracker"}
    tracker = by_kind(resources, "Deployment")["task-tracker"]
    assert tracker["spec"]["replicas"] == 2
    assert scaled["task-tracker"]["spec"]["minReplicaCount"] == 2
    (container,) = tracker["spec"]["template"]["spec"]["containers"]
    env = k8s_environment(resources, container)
    path = env["FERRY_DATABASE_URL_FILE"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(
        v for v in tracker["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    secret = by_kind(resources, "Secret")[volume["secret"]["secretName"]]
    assert secret["stringData"]["url"].startswith("postgresql://")


def test_the_workspace_store_and_the_models_keep_their_data_on_claims(
    resources: list[dict[str, Any]],
) -> None:
    claims = by_kind(resources, "PersistentVolumeClaim")
    deployments = by_kind(resources, "Deployment")
    for name in ("workspace-store", "nlu-models"):
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        data_dir = k8s_environment(resources, container)["FERRY_DATA_DIR"]
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    assert deployments["workspace-store"]["spec"]["strategy"]["type"] == "Recreate"
    assert claims["ferry-models"]["spec"]["accessModes"] == ["ReadWriteMany"]  # scaled


def test_network_policies_allow_each_service_only_what_it_needs(
    resources: list[dict[str, Any]],
) -> None:
    policies = list(by_kind(resources, "NetworkPolicy").values())

    def egress_ports(labels: dict[str, str]) -> set[int]:
        ports: set[int] = set()
        for policy in policies:
            if selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels):
                for rule in policy["spec"].get("egress", []):
                    ports |= {p["port"] for p in rule.get("ports", [])}
        return ports

    deny = by_kind(resources, "NetworkPolicy")["ferry-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    needs = {
        "task-tracker": {53, 5672, 5432},
        "gateway": {53, 5672},
        "workspace-store": {53, 5672},
        "nlu-models": {53, 5672},
        "hf-collector": {53, 5672, 443},
        "aiod-uploader": {53, 5672, 443},
        "openhexa-launcher": {53, 5672, 443},
    }
    for name, deployment in by_kind(resources, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deny["podSelector"]["matchLabels"], labels), name
        assert egress_ports(labels) == needs[name], name
    gateway_in = by_kind(resources, "NetworkPolicy")["gateway-ingress"]["spec"]["ingress"]
    assert {p["port"] for rule in gateway_in for p in rule["ports"]} == {8443, 8444}


def test_the_sandbox_overlay_adds_the_stand_ins_and_points_the_workers_at_them() -> None:
    overlay = render(SANDBOX_OVERLAY)
    deployments = by_kind(overlay, "Deployment")
    sandbox = deployments["sandbox"]["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in sandbox["ports"]] == [9101, 9102, 9103]
    service_ports = [p["port"] for p in by_kind(overlay, "Service")["sandbox"]["spec"]["ports"]]
    assert service_ports == [9101, 9102, 9103]
    for container in containers(overlay):
        env = k8s_environment(overlay, container)
        for name in ("FERRY_HF_ENDPOINT", "FERRY_AIOD_API_URL", "FERRY_OPENHEXA_URL"):
            if name in env:
                assert env[name].startswith("http://sandbox:91"), (container["name"], name)
    secrets = by_kind(overlay, "Secret")
    assert secrets["ferry-aiod"]["stringData"]["client-secret"] == "sandbox-connector-secret"
    assert secrets["ferry-hf"]["stringData"]["token"].startswith("hf_sandbox")


def test_secret_templates_hold_no_real_secret(resources: list[dict[str, Any]]) -> None:
    for name, secret in by_kind(resources, "Secret").items():
        for value in secret["stringData"].values():
            assert value == "" or "CHANGE_ME" in value, name
