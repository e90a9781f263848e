"""Evaluate the Tiltfile with stand-ins for Tilt's built-in functions.

The stand-ins record each call instead of talking to a cluster, so a test can
check what the Tiltfile would build, deploy and forward. .ci/deploy-check runs
this file as a script to evaluate the Tiltfile once per deploy mode.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark

ROOT = Path(__file__).resolve().parents[2]
TILTFILE = ROOT / "Tiltfile"
DEPLOY_MODES = ("kustomize", "helm")

# Starlark run before the Tiltfile in the same module: Tilt's `config`
# module as a struct over the recording functions.
PRELUDE = """
config = struct(define_string = _config_define_string, parse = _config_parse)
"""


@dataclass
class TiltCalls:
    """What one evaluation of the Tiltfile asked Tilt to do."""

    images: list[dict[str, Any]] = field(default_factory=list)
    deployed: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def port_forwards(self) -> dict[str, list[str]]:
        return {
            name: list(options.get("port_forwards", []))
            for name, options in self.resources.items()
            if options.get("port_forwards")
        }


def evaluate(deploy: str | None) -> TiltCalls:
    """Evaluate the Tiltfile as `tilt up -- --deploy=DEPLOY` would; None
    passes no flag."""
    calls = TiltCalls()
    module = starlark.Module()

    def define_string(name: str, args: bool = False, usage: str = "") -> None:
        calls.flags.append(name)

    def parse() -> dict[str, str]:
        return {} if deploy is None else {"deploy": deploy}

    def docker_build(ref: str, context: str, **options: Any) -> None:
        calls.images.append({"ref": ref, "context": context, **options})

    def kustomize(path: str, **options: Any) -> dict[str, Any]:
        return {"source": "kustomize", "path": path, **options}

    def helm(path: str, **options: Any) -> dict[str, Any]:
        return {"source": "helm", "path": path, **options}

    def filter_yaml(objects: dict[str, Any], labels: dict[str, str] | None = None, **options: Any) -> tuple:
        matching = {**objects, "only_labels": labels}
        rest = {**objects, "without_labels": labels}
        return matching, rest

    def k8s_yaml(objects: dict[str, Any], **options: Any) -> None:
        calls.deployed.append(objects)

    def k8s_resource(workload: str, **options: Any) -> None:
        if workload in calls.resources:
            raise ValueError(f"k8s_resource called twice for {workload}")
        calls.resources[workload] = options

    for name, function in {
        "_config_define_string": define_string,
        "_config_parse": parse,
        "docker_build": docker_build,
        "kustomize": kustomize,
        "helm": helm,
        "filter_yaml": filter_yaml,
        "k8s_yaml": k8s_yaml,
        "k8s_resource": k8s_resource,
    }.items():
        module.add_callable(name, function)

    globals_ = starlark.Globals.extended_by([starlark.LibraryExtension.StructType, starlark.LibraryExtension.Print])
    dialect = starlark.Dialect.extended()
    starlark.eval(module, starlark.parse("prelude", PRELUDE, dialect), globals_)
    starlark.eval(module, starlark.parse(str(TILTFILE), TILTFILE.read_text(), dialect), globals_)
    return calls


if __name__ == "__main__":
    for mode in DEPLOY_MODES:
        result = evaluate(mode)
        forwards = sum(len(ports) for ports in result.port_forwards().values())
        print(
            f"Tiltfile with --deploy={mode}: {len(result.images)} image, "
            f"{len(result.deployed)} manifest sets, {len(result.resources)} resources, "
            f"{forwards} port forwards"
        )
    sys.exit(0)
