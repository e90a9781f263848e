"""Fixtures shared by the deployment tests: every rendering that ships, built
once per session, and helpers that read pod specs out of workloads."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

import manifests

# Every chart scenario and overlay, by the name that test ids show.
RENDERINGS = [f"chart:{name}" for name in manifests.chart_scenarios()] + [
    f"kustomize:{name}" for name in manifests.OVERLAYS
]

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Objects of every rendering, keyed by the names in RENDERINGS."""
    objects: dict[str, list[dict[str, Any]]] = {}
    for name, values in manifests.chart_scenarios().items():
        objects[f"chart:{name}"] = manifests.render_chart(values)
    for name, overlay in manifests.OVERLAYS.items():
        objects[f"kustomize:{name}"] = manifests.kustomize(overlay)
    return objects


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "Pod":
        return workload["spec"]
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    if workload["kind"] == "Pod":
        return workload["metadata"].get("labels", {})
    return workload["spec"]["template"]["metadata"].get("labels", {})


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (item for item in objects if item["kind"] in WORKLOAD_KINDS)


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Evaluate a Kubernetes label selector (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
