"""Checks on the pods of every rendering: probes, the locked-down security
context, shutdown timing, disruption budgets and selectors."""

from __future__ import annotations

import re

import pytest

from conftest import RENDERINGS, containers, matches, pod_labels, pod_spec, workloads

# Labels that change between releases, so a selector must never contain them.
RELEASE_SCOPED_LABELS = {"app.kubernetes.io/version", "helm.sh/chart"}

LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

GRPC_PORTS = {
    "ingestion": 50051,
    "profile": 50052,
    "decisioning": 50053,
    "recommendations": 50054,
    "surveys": 50055,
    "gamification": 50056,
}


def parse_seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, f"drain timeout {value!r} is not in whole seconds"
    return int(match.group(1))


def config_value(objects, name: str, key: str) -> str | None:
    """Return `key` from the ConfigMap whose envFrom the container reads."""
    for item in objects:
        if item["kind"] == "ConfigMap" and item["metadata"]["name"] == name:
            return item.get("data", {}).get(key)
    return None


def effective(workload, container, field: str):
    """Return a security setting as the kubelet applies it: the container's
    value, else the pod's."""
    container_context = container.get("securityContext", {})
    if field in container_context:
        return container_context[field]
    return pod_spec(workload).get("securityContext", {}).get(field)


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_long_running_container_has_three_probes(rendered, rendering):
    checked = 0
    for workload in workloads(rendered[rendering]):
        if workload["kind"] not in LONG_RUNNING_KINDS:
            continue
        for container in pod_spec(workload)["containers"]:
            where = f"{workload['kind']} {workload['metadata']['name']} container {container['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{where} has no {probe}"
            checked += 1
    assert checked >= 7, f"only {checked} containers checked in {rendering}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_rtim_probes_use_grpc_health_or_healthz(rendered, rendering):
    for workload in workloads(rendered[rendering]):
        component = pod_labels(workload).get("app.kubernetes.io/component")
        if workload["kind"] != "Deployment":
            continue
        container = pod_spec(workload)["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            handler = container[probe]
            if component == "gateway":
                assert handler.get("httpGet", {}).get("path") == "/healthz", f"gateway {probe}: {handler}"
            else:
                assert handler.get("grpc") == {"port": GRPC_PORTS[component]}, f"{component} {probe}: {handler}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_no_container_runs_as_root(rendered, rendering):
    for workload in workloads(rendered[rendering]):
        for container in containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']} container {container['name']}"
            assert effective(workload, container, "runAsNonRoot") is True, f"{where}: runAsNonRoot"
            user = effective(workload, container, "runAsUser")
            assert isinstance(user, int), f"{where}: no numeric runAsUser"
            assert user != 0, f"{where}: runs as user 0"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_containers_are_locked_down(rendered, rendering):
    for workload in workloads(rendered[rendering]):
        for container in containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']} container {container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert context.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities"
            seccomp = effective(workload, container, "seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccompProfile"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_grace_period_covers_prestop_and_drain(rendered, rendering):
    objects = rendered[rendering]
    deployments = [item for item in objects if item["kind"] == "Deployment"]
    assert deployments, f"no Deployment in {rendering}"
    for deployment in deployments:
        spec = pod_spec(deployment)
        container = spec["containers"][0]
        where = f"Deployment {deployment['metadata']['name']}"
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        config_name = container["envFrom"][0]["configMapRef"]["name"]
        drain = parse_seconds(config_value(objects, config_name, "RTIM__SERVER__DRAIN_TIMEOUT"))
        grace = spec["terminationGracePeriodSeconds"]
        assert sleep > 0, f"{where}: preStop sleep"
        assert grace >= sleep + drain + 5, f"{where}: grace {grace} s < preStop {sleep} s + drain {drain} s + 5 s"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_every_deployment_has_a_disruption_budget(rendered, rendering):
    objects = rendered[rendering]
    budgets = [item for item in objects if item["kind"] == "PodDisruptionBudget"]
    for deployment in (item for item in objects if item["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        covering = [
            budget["metadata"]["name"]
            for budget in budgets
            if budget["metadata"].get("namespace") == deployment["metadata"].get("namespace")
            and matches(budget["spec"]["selector"], pod_labels(deployment))
        ]
        assert len(covering) == 1, f"Deployment {name} is selected by PodDisruptionBudgets {covering}"


def selectors(objects):
    """Yield (where, selector labels) for every selector in the objects."""
    for item in objects:
        kind, name, spec = item["kind"], item["metadata"]["name"], item.get("spec", {})
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "PodDisruptionBudget"}:
            yield f"{kind} {name}", spec["selector"].get("matchLabels", {})
        if kind == "Service":
            yield f"Service {name}", spec.get("selector", {})
        if kind == "ServiceMonitor":
            yield f"ServiceMonitor {name}", spec["selector"].get("matchLabels", {})
        if kind == "NetworkPolicy":
            yield f"NetworkPolicy {name}", spec["podSelector"].get("matchLabels", {})
            for rule in spec.get("ingress", []):
                for peer in rule.get("from", []):
                    yield f"NetworkPolicy {name} peer", peer.get("podSelector", {}).get("matchLabels", {})
        if kind in {"Deployment", "StatefulSet"}:
            for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
                yield f"{kind} {name} spread", constraint["labelSelector"].get("matchLabels", {})


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_selectors_never_contain_the_version(rendered, rendering):
    found = list(selectors(rendered[rendering]))
    assert found, f"no selectors in {rendering}"
    for where, labels in found:
        leaked = RELEASE_SCOPED_LABELS & labels.keys()
        assert not leaked, f"{where} selects on {sorted(leaked)}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_each_service_selects_one_workload(rendered, rendering):
    objects = rendered[rendering]
    for service in (item for item in objects if item["kind"] == "Service"):
        selected = [
            workload["metadata"]["name"]
            for workload in workloads(objects)
            if workload["kind"] != "Job" and matches({"matchLabels": service["spec"]["selector"]}, pod_labels(workload))
        ]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {selected}"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_migrations_job_runs_rtim_migrate(rendered, rendering):
    jobs = [item for item in rendered[rendering] if item["kind"] == "Job"]
    assert len(jobs) == 1, f"{rendering} has Jobs {[job['metadata']['name'] for job in jobs]}"
    container = pod_spec(jobs[0])["containers"][0]
    assert container["args"] == ["migrate"]
    names = {variable["name"] for variable in container.get("env", [])}
    assert "RTIM__DATABASE__URL" in names, "the Job reads the database URL"


@pytest.mark.parametrize("rendering", ["chart:production-values.yaml", "kustomize:prod"])
def test_production_spreads_pods_across_zones(rendered, rendering):
    for deployment in (item for item in rendered[rendering] if item["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        constraints = pod_spec(deployment).get("topologySpreadConstraints", [])
        zones = [item for item in constraints if item["topologyKey"] == "topology.kubernetes.io/zone"]
        assert len(zones) == 1, f"Deployment {name} has zone constraints {zones}"
        assert zones[0]["whenUnsatisfiable"] == "DoNotSchedule", f"Deployment {name}"
        assert matches(zones[0]["labelSelector"], pod_labels(deployment)), f"Deployment {name} spreads other pods"
