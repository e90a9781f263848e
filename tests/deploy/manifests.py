"""Render the Helm chart and the kustomize overlays into Kubernetes objects.

The tests beside this file import it, and .ci/deploy-check runs it as a
script: `python tests/deploy/manifests.py OUT_DIR` lints the chart strictly
for every values scenario, then writes one multi-document YAML file per
scenario and overlay into OUT_DIR for kubernetes-validate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rtim"
OVERLAYS = {
    "dev": ROOT / "k8s" / "overlays" / "dev",
    "prod": ROOT / "k8s" / "overlays" / "prod",
}
RELEASE = "rtim"
NAMESPACE = "rtim"
KUBE_VERSION = "v1.30.0"

# Scenario name of the chart's own values.yaml, next to the ci/*-values.yaml files.
DEFAULT_SCENARIO = "values.yaml"

# helm_python reports lint findings with these severities.
SEVERITY_WARNING = 2


def chart_scenarios() -> dict[str, dict[str, Any] | None]:
    """Return the values of every tested scenario by name: the chart's
    defaults (None) and each ci/*-values.yaml file."""
    scenarios: dict[str, dict[str, Any] | None] = {DEFAULT_SCENARIO: None}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        scenarios[path.name] = yaml.safe_load(path.read_text()) or {}
    return scenarios


def lint_chart(values: dict[str, Any] | None) -> list[str]:
    """Lint the chart as `helm lint --strict` does and return every warning
    and error, each as `path: message`."""
    report = helm_python.lint(CHART, values, strict=True, kube_version=KUBE_VERSION)
    findings = [
        f"{message['path']}: {message['error'].strip()}"
        for message in report["messages"]
        if message["severity"] >= SEVERITY_WARNING
    ]
    findings.extend(error.strip() for error in report["errors"])
    return findings


def render_chart_text(values: dict[str, Any] | None) -> str:
    """Render every template, hooks and tests included, as one YAML stream."""
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    documents = [text for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")]
    return "\n---\n".join(documents)


def render_notes(values: dict[str, Any] | None) -> str:
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def kustomize_text(overlay: Path) -> str:
    """Build a kustomization with `kubectl kustomize`."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(overlay)],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return result.stdout


def load_objects(text: str) -> list[dict[str, Any]]:
    """Parse a YAML stream, skipping empty documents."""
    return [document for document in yaml.safe_load_all(text) if document]


def render_chart(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    return load_objects(render_chart_text(values))


def kustomize(overlay: Path) -> list[dict[str, Any]]:
    return load_objects(kustomize_text(overlay))


def write_all(out_dir: Path) -> int:
    """Lint and render every scenario and overlay into `out_dir`; return the
    number of lint findings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    findings = 0
    for scenario, values in chart_scenarios().items():
        problems = lint_chart(values)
        for problem in problems:
            print(f"helm lint --strict ({scenario}): {problem}", file=sys.stderr)
        findings += len(problems)
        status = "passed" if not problems else f"{len(problems)} findings"
        print(f"helm lint --strict with {scenario}: {status}")
        path = out_dir / f"chart-{scenario}"
        path.write_text(render_chart_text(values))
        print(f"rendered the chart with {scenario} into {path} ({len(load_objects(path.read_text()))} objects)")
    for name, overlay in OVERLAYS.items():
        path = out_dir / f"kustomize-{name}.yaml"
        path.write_text(kustomize_text(overlay))
        print(f"built {overlay.relative_to(ROOT)} into {path} ({len(load_objects(path.read_text()))} objects)")
    return findings


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: manifests.py OUT_DIR")
    sys.exit(1 if write_all(Path(sys.argv[1])) else 0)
