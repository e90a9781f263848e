"""The Tiltfile, evaluated with recording stand-ins for Tilt's functions,
builds the image, deploys what exists, and forwards every port."""

from __future__ import annotations

import pytest
import starlark
import yaml

import manifests
import tiltfile

FORWARDED_PORTS = {
    "rtim-ingestion": ["50051:50051"],
    "rtim-profile": ["50052:50052"],
    "rtim-decisioning": ["50053:50053"],
    "rtim-recommendations": ["50054:50054"],
    "rtim-surveys": ["50055:50055"],
    "rtim-gamification": ["50056:50056"],
    "rtim-gateway": ["8080:8080"],
}


def rendered_workloads(calls: tiltfile.TiltCalls) -> set[str]:
    """Render what the Tiltfile deploys and return the workload names, which
    Tilt uses as resource names."""
    names: set[str] = set()
    for deployed in calls.deployed:
        if deployed["source"] == "kustomize":
            objects = manifests.kustomize(manifests.ROOT / deployed["path"])
        else:
            values: dict = {}
            for path in deployed["values"]:
                values.update(yaml.safe_load((manifests.ROOT / path).read_text()))
            objects = manifests.render_chart(values)
            excluded = deployed["without_labels"]
            objects = [
                item
                for item in objects
                if not all(item["metadata"].get("labels", {}).get(key) == value for key, value in excluded.items())
            ]
        names |= {
            item["metadata"]["name"] for item in objects if item["kind"] in {"Deployment", "StatefulSet", "Job", "Pod"}
        }
    return names


def test_image_builds_from_the_dockerfile():
    calls = tiltfile.evaluate(None)
    assert len(calls.images) == 1
    image = calls.images[0]
    assert (image["ref"], image["context"], image["dockerfile"]) == ("rtim", ".", "Dockerfile")
    for folder in ("src", "services", "shared", "proto", "Cargo.lock"):
        assert folder in image["only"], f"changes under {folder} must rebuild the image"


def test_default_deploys_the_dev_overlay():
    calls = tiltfile.evaluate(None)
    assert calls.deployed == [{"source": "kustomize", "path": "k8s/overlays/dev"}]
    assert calls.flags == ["deploy"]


def test_helm_mode_deploys_chart_and_backends():
    calls = tiltfile.evaluate("helm")
    sources = [(deployed["source"], deployed["path"]) for deployed in calls.deployed]
    assert sources == [("kustomize", "k8s/overlays/dev/backends"), ("helm", "helm/rtim")]
    chart = calls.deployed[1]
    assert chart["namespace"] == manifests.NAMESPACE
    assert chart["name"] == manifests.RELEASE


@pytest.mark.parametrize("deploy", tiltfile.DEPLOY_MODES)
def test_every_port_is_forwarded(deploy):
    assert tiltfile.evaluate(deploy).port_forwards() == FORWARDED_PORTS


@pytest.mark.parametrize("deploy", tiltfile.DEPLOY_MODES)
def test_resources_name_deployed_workloads(deploy):
    calls = tiltfile.evaluate(deploy)
    workloads = rendered_workloads(calls)
    unknown = sorted(set(calls.resources) - workloads)
    assert not unknown, f"k8s_resource names {unknown}, but the manifests deploy {sorted(workloads)}"
    for options in calls.resources.values():
        for dependency in options.get("resource_deps", []):
            assert dependency in workloads, f"resource_deps names {dependency}, which is not deployed"


def test_helm_mode_leaves_out_the_test_pod():
    calls = tiltfile.evaluate("helm")
    assert "rtim-test-gateway" not in rendered_workloads(calls)


def test_unknown_mode_fails():
    with pytest.raises(starlark.StarlarkError, match="unknown --deploy=swarm"):
        tiltfile.evaluate("swarm")
