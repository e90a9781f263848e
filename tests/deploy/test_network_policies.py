"""The NetworkPolicies of every rendering admit exactly the intended
connections. The allowed graph is computed from the rendered policies and the
pods' labels and ports, the way a CNI plugin applies them, and compared with
a table written from the code: who calls whom."""

from __future__ import annotations

from typing import Any

import pytest

import manifests
from conftest import RENDERINGS, matches, pod_labels, pod_spec, workloads

ANYWHERE = "anywhere"

SERVICE_PORTS = {
    "ingestion": 50051,
    "profile": 50052,
    "decisioning": 50053,
    "recommendations": 50054,
    "surveys": 50055,
    "gamification": 50056,
    "gateway": 8080,
}

# Calls between the services, from the code. The gateway forwards to every
# service (services/gateway/src/grpc.rs). Decisioning and surveys read
# profiles: their lib.rs open a channel to endpoints.profile.
CALLS = [
    ("gateway", "ingestion"),
    ("gateway", "profile"),
    ("gateway", "decisioning"),
    ("gateway", "recommendations"),
    ("gateway", "surveys"),
    ("gateway", "gamification"),
    ("decisioning", "profile"),
    ("surveys", "profile"),
]

# The development backends and their client ports; every rtim pod may reach them.
DEV_BACKENDS = {"nats": 4222, "postgres": 5432, "redis": 6379}
RTIM_COMPONENTS = [*SERVICE_PORTS, "migrate"]


def expected_edges(monitoring_namespace: str | None, dev_backends: bool) -> set[tuple[str, str, int]]:
    edges = {(ANYWHERE, "gateway", SERVICE_PORTS["gateway"])}
    edges |= {(caller, callee, SERVICE_PORTS[callee]) for caller, callee in CALLS}
    if monitoring_namespace:
        edges |= {(f"namespace:{monitoring_namespace}", name, port) for name, port in SERVICE_PORTS.items()}
    if dev_backends:
        edges |= {
            (component, backend, port) for backend, port in DEV_BACKENDS.items() for component in RTIM_COMPONENTS
        }
    return edges


def expected_for(rendering: str) -> set[tuple[str, str, int]]:
    source, name = rendering.split(":", 1)
    if source == "kustomize":
        return expected_edges("monitoring", dev_backends=name == "dev")
    values = manifests.chart_scenarios()[name] or {}
    namespace = values.get("networkPolicy", {}).get("monitoringNamespace", "monitoring")
    return expected_edges(namespace, dev_backends=False)


def workload_name(workload: dict[str, Any]) -> str:
    """Name a workload by its component label, else by its own name."""
    labels = pod_labels(workload)
    return labels.get("app.kubernetes.io/component") or workload["metadata"]["name"]


def container_ports(workload: dict[str, Any]) -> dict[str, int]:
    """Return every container port of the pod, by name and by number."""
    ports: dict[str, int] = {}
    for container in pod_spec(workload)["containers"]:
        for port in container.get("ports", []):
            ports[str(port["containerPort"])] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def admitted_ports(rule: dict[str, Any], ports: dict[str, int]) -> set[int]:
    """Return the pod's ports that a rule admits; no port list admits all."""
    open_ports = set(ports.values())
    if not rule.get("ports"):
        return open_ports
    admitted: set[int] = set()
    for entry in rule["ports"]:
        port = entry.get("port")
        if port is None:
            return open_ports
        # A number stands for itself, even when no container declares it,
        # because it may start a range; a name must match a container port.
        number = port if isinstance(port, int) else ports.get(port)
        if number is None:
            continue
        end = entry.get("endPort", number)
        admitted |= {candidate for candidate in open_ports if number <= candidate <= end}
    return admitted


def sources(peer: dict[str, Any], pods: list[dict[str, Any]], namespace: str) -> list[str]:
    """Return the names of what a `from` peer admits: pods of the same
    namespace by name, other namespaces and address blocks symbolically."""
    if "ipBlock" in peer:
        return [f"ipBlock:{peer['ipBlock']['cidr']}"]
    namespace_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if namespace_selector is None:
        return [
            workload_name(pod)
            for pod in pods
            if pod["metadata"].get("namespace") == namespace and matches(pod_selector or {}, pod_labels(pod))
        ]
    named = namespace_selector.get("matchLabels", {}).get("kubernetes.io/metadata.name")
    scope = f"namespace:{named}" if named else f"namespaces:{namespace_selector}"
    return [scope if not pod_selector else f"{scope}/pods:{pod_selector}"]


def allowed_edges(objects: list[dict[str, Any]]) -> set[tuple[str, str, int | str]]:
    """Compute (source, destination, port) for every connection the policies admit."""
    pods = [workload for workload in workloads(objects) if workload["kind"] != "Pod"]
    policies = [
        item for item in objects if item["kind"] == "NetworkPolicy" and "Ingress" in item["spec"].get("policyTypes", [])
    ]
    edges: set[tuple[str, str, int | str]] = set()
    for pod in pods:
        destination = workload_name(pod)
        namespace = pod["metadata"].get("namespace")
        selecting = [
            policy
            for policy in policies
            if policy["metadata"].get("namespace") == namespace
            and matches(policy["spec"]["podSelector"], pod_labels(pod))
        ]
        ports = container_ports(pod)
        if not selecting:
            # No policy selects the pod, so Kubernetes admits everything.
            edges |= {(ANYWHERE, destination, port) for port in set(ports.values()) or {"*"}}
            continue
        for policy in selecting:
            for rule in policy["spec"].get("ingress", []):
                admitted = admitted_ports(rule, ports)
                peers = rule.get("from")
                names = [ANYWHERE] if not peers else [name for peer in peers for name in sources(peer, pods, namespace)]
                edges |= {(name, destination, port) for name in names for port in admitted}
    return edges


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_policies_admit_exactly_the_intended_paths(rendered, rendering):
    allowed = allowed_edges(rendered[rendering])
    expected = expected_for(rendering)
    missing = sorted(expected - allowed, key=str)
    unexpected = sorted(allowed - expected, key=str)
    assert not missing, f"missing: {missing}\nunexpected: {unexpected}"
    assert not unexpected, f"unexpected: {unexpected}"


def test_graph_sees_a_removed_policy(rendered):
    """Without the per-service policy, profile falls back to the default deny
    plus the scrape rule: the computation must notice the lost callers."""
    objects = [
        item
        for item in rendered["kustomize:prod"]
        if not (item["kind"] == "NetworkPolicy" and item["metadata"]["name"] == "rtim-profile")
    ]
    allowed = allowed_edges(objects)
    assert ("gateway", "profile", 50052) not in allowed
    assert ("namespace:monitoring", "profile", 50052) in allowed


def test_chart_without_policies_admits_everything():
    objects = manifests.render_chart({"networkPolicy": {"enabled": False, "monitoringNamespace": "monitoring"}})
    allowed = allowed_edges(objects)
    assert (ANYWHERE, "profile", 50052) in allowed
    assert not any(item["kind"] == "NetworkPolicy" for item in objects)
