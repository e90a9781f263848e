"""values.schema.json and the chart's own checks reject bad values with a
message that names the key, and the chart README documents every value."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest
import yaml

import manifests

INVALID_VALUES = [
    pytest.param(
        {"services": {"profile": {"replcas": 3}}},
        ["/services/profile", "'replcas' not allowed"],
        id="unknown-service-key",
    ),
    pytest.param({"imageTag": "1.0"}, ["'imageTag' not allowed"], id="unknown-top-level-key"),
    pytest.param(
        {"services": {"gateway": {"replicas": "two"}}},
        ["/services/gateway/replicas", "got string, want integer"],
        id="replicas-wrong-type",
    ),
    pytest.param(
        {"config": {"drainTimeoutSeconds": "20s"}},
        ["/config/drainTimeoutSeconds", "want integer"],
        id="drain-timeout-wrong-type",
    ),
    pytest.param(
        {"metrics": {"prometheusRule": {"metricNames": {"rpcRequest": "x"}}}},
        ["/metrics/prometheusRule/metricNames", "'rpcRequest' not allowed"],
        id="unknown-metric-name-key",
    ),
    pytest.param(
        {"secrets": {"apiKeys": [{"tenant": "demo", "scopes": ["read"], "sha256": "not-a-hash"}]}},
        ["/secrets/apiKeys/0/sha256"],
        id="api-key-hash-format",
    ),
    pytest.param(
        {"secrets": {"apiKeys": [{"tenant": "demo", "scopes": ["root"], "sha256": "0" * 64}]}},
        ["/secrets/apiKeys/0/scopes/0"],
        id="api-key-unknown-scope",
    ),
    pytest.param(
        {"services": {"ingestion": {"extraEnv": {"LOG": "debug"}}}},
        ["/services/ingestion/extraEnv", "'LOG' not allowed"],
        id="extra-env-outside-rtim-settings",
    ),
]


@pytest.mark.parametrize(("values", "expected"), INVALID_VALUES)
def test_schema_rejects_bad_values(values, expected):
    with pytest.raises(helm_python.HelmValuesError) as raised:
        manifests.render_chart(values)
    message = str(raised.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in: {message}"


@pytest.mark.parametrize(("values", "expected"), INVALID_VALUES)
def test_lint_reports_bad_values(values, expected):
    findings = "\n".join(manifests.lint_chart(values))
    assert expected[0] in findings, findings


INVALID_COMBINATIONS = [
    pytest.param(
        {
            "secrets": {
                "existingSecret": "mine",
                "apiKeys": [{"tenant": "demo", "scopes": ["read"], "sha256": "0" * 64}],
            }
        },
        "secrets.apiKeys must be empty when secrets.existingSecret is set",
        id="keys-with-existing-secret",
    ),
    pytest.param(
        {"backends": {"databaseUrl": ""}},
        "set backends.databaseUrl, or secrets.existingSecret",
        id="no-database",
    ),
    pytest.param(
        {"services": {"surveys": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}},
        "services.surveys.autoscaling.minReplicas (5) is greater than maxReplicas (2)",
        id="autoscaling-bounds",
    ),
]


@pytest.mark.parametrize(("values", "expected"), INVALID_COMBINATIONS)
def test_chart_fails_on_invalid_combinations(values, expected):
    with pytest.raises(helm_python.HelmRenderError) as raised:
        manifests.render_chart(values)
    assert expected in str(raised.value)


def test_default_values_match_the_schema():
    chart = helm_python.Chart.load(manifests.CHART)
    chart.validate_schema(None)


def test_existing_secret_replaces_the_chart_secret():
    values = manifests.chart_scenarios()["existing-secret-values.yaml"]
    objects = manifests.render_chart(values)
    assert not [item for item in objects if item["kind"] == "Secret"], "the chart creates no Secret"
    for item in objects:
        if item["kind"] not in {"Deployment", "Job"}:
            continue
        spec = item["spec"]["template"]["spec"]
        for variable in spec["containers"][0].get("env", []):
            if variable["name"] == "RTIM__DATABASE__URL":
                assert variable["valueFrom"]["secretKeyRef"] == {"name": "rtim-credentials", "key": "DATABASE_URL"}


def test_config_checksum_changes_with_config():
    def checksum(values: dict[str, Any]) -> str:
        objects = manifests.render_chart(values)
        deployment = next(item for item in objects if item["kind"] == "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({}), "rendering is deterministic"
    assert checksum({}) != checksum({"config": {"logFilter": "debug"}})


def flatten(values: dict[str, Any], prefix: str = "") -> list[str]:
    """List the dotted path of every value. Maps that take keys of the
    user's choosing, and resources, count as one value."""
    whole = {"extraEnv", "labels", "nodeSelector", "resources"}
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in whole:
            paths.extend(flatten(value, f"{path}."))
        else:
            paths.append(path)
    return paths


def value_paths(values: dict[str, Any]) -> list[str]:
    """List the paths the README must document: the per-service keys that
    every service has collapse into services.NAME."""
    paths = set(flatten({key: value for key, value in values.items() if key != "services"}))
    per_service = {name: set(flatten(block)) for name, block in values["services"].items()}
    common = set.intersection(*per_service.values())
    paths |= {f"services.NAME.{path}" for path in common}
    for name, keys in per_service.items():
        paths |= {f"services.{name}.{path}" for path in keys - common}
    return sorted(paths)


def test_readme_documents_every_value():
    values = yaml.safe_load((manifests.CHART / "values.yaml").read_text())
    readme = (manifests.CHART / "README.md").read_text()
    section = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    paths = value_paths(values)
    assert len(paths) > 40, paths
    missing = [path for path in paths if path not in documented]
    assert not missing, f"values missing from the README table: {missing}"
    stale = sorted(documented - set(paths))
    assert not stale, f"README documents values that values.yaml lacks: {stale}"


def test_notes_warn_without_api_keys():
    assert "WARNING: secrets.apiKeys is empty" in manifests.render_notes(None)
    keyed = manifests.chart_scenarios()["default-values.yaml"]
    assert "WARNING" not in manifests.render_notes(keyed)


def rule_expressions(values: dict[str, Any] | None) -> str:
    """Render the chart and return every alert expression of its PrometheusRule."""
    objects = manifests.render_chart(values)
    rule = next(item for item in objects if item["kind"] == "PrometheusRule")
    return "\n".join(rule_["expr"] for group in rule["spec"]["groups"] for rule_ in group["rules"])


def test_prometheus_rule_reads_metric_names_from_values():
    values = yaml.safe_load((manifests.CHART / "ci" / "production-values.yaml").read_text())
    values["metrics"]["prometheusRule"]["metricNames"] = {
        "rpcRequests": "renamed_rpc_total",
        "rpcCodeLabel": "renamed_code",
        "rpcServerErrorCodes": "INTERNAL",
        "rpcDurationBuckets": "renamed_rpc_seconds_bucket",
        "deadLetters": "renamed_dead_lettered_total",
        "deadLetterMatchers": 'reason="max_deliver"',
        "deadLetterConsumerLabel": "renamed_dead_letter_consumer",
        "consumerLag": "renamed_consumer_pending",
        "consumerLagMatchers": "",
        "consumerLagConsumerLabel": "renamed_lag_consumer",
    }
    expressions = rule_expressions(values)

    for default in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "grpc_code",
        "rtim_consumer_dead_lettered_total",
        "rtim_consumer_pending_messages",
        ", consumer=~",
        "(namespace, consumer)",
    ):
        assert default not in expressions, f"{default} still in the rules"

    assert 'renamed_rpc_total{namespace="rtim"' in expressions
    assert 'renamed_code=~"INTERNAL"' in expressions
    assert "renamed_rpc_seconds_bucket{" in expressions
    assert 'reason="max_deliver"' in expressions
    assert "by (namespace, renamed_dead_letter_consumer)" in expressions
    assert "renamed_consumer_pending{" in expressions
    assert 'renamed_lag_consumer=~"' in expressions

    assert ", }" not in expressions, "an empty matcher leaves no trailing comma"
    assert "{, " not in expressions, "an empty matcher leaves no leading comma"


def test_prometheus_rule_defaults_to_served_names():
    values = {"metrics": {"prometheusRule": {"enabled": True}}}
    expressions = rule_expressions(values)
    assert "rate(grpc_server_handled_total{" in expressions
    assert 'grpc_code=~"Unknown|DeadlineExceeded|Unimplemented|Internal|Unavailable|DataLoss"' in expressions
    assert "rate(grpc_server_handling_seconds_bucket{" in expressions
    assert "increase(rtim_consumer_dead_lettered_total{" in expressions
    assert "(rtim_consumer_pending_messages{" in expressions
    assert "max by (namespace, consumer)" in expressions
    for stale in ("rpc_requests_total", "consumer_messages_total", "jetstream_", "stream_name", "outcome="):
        assert stale not in expressions, f"{stale} is in the default rules"


def test_notes_warn_on_scaled_profile():
    assert "profile runs more than one replica" not in manifests.render_notes(None)
    scaled = {"services": {"profile": {"replicas": 2}}}
    assert "profile runs more than one replica" in manifests.render_notes(scaled)
