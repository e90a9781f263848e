"""The chart's alerts and the queries of docs/operations.md read only the
series and labels that docs/telemetry.md lists, and the chart's Grafana
dashboard ConfigMap carries deploy/grafana/rtim-dashboard.json."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate

import manifests

TELEMETRY = manifests.ROOT / "docs" / "telemetry.md"
DASHBOARD = manifests.ROOT / "deploy" / "grafana" / "rtim-dashboard.json"
CHART_DASHBOARD = manifests.CHART / "dashboards" / "rtim-dashboard.json"

# Labels that the scrape adds (the ServiceMonitor sets namespace and job) and
# the bucket bound of histograms. docs/telemetry.md lists only rtim's own.
TARGET_LABELS = {"namespace", "job", "le"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def served_series() -> dict[str, set[str]]:
    """Return each metric of the table in docs/telemetry.md with its labels.
    A histogram's name stands for its _bucket, _count and _sum series."""
    series: dict[str, set[str]] = {}
    row = re.compile(r"^\| `([a-z_:]+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.MULTILINE)
    for name, kind, labels in row.findall(TELEMETRY.read_text()):
        # A label's values may follow it in brackets: `outcome` (`accepted`, ...).
        label_names = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", labels)))
        names = [name] if kind != "histogram" else [name + suffix for suffix in HISTOGRAM_SUFFIXES]
        for series_name in names:
            series[series_name] = label_names
    return series


def rule_expressions(values: dict[str, Any] | None) -> list[str]:
    objects = manifests.render_chart(values)
    rule = next(item for item in objects if item["kind"] == "PrometheusRule")
    return [rule_["expr"] for group in rule["spec"]["groups"] for rule_ in group["rules"]]


def query_names(expression: str) -> tuple[set[str], set[str]]:
    """Return the metric names and the label names that a PromQL expression
    reads. It handles the selectors, aggregations and functions that the
    chart and the docs use, not the whole language."""
    text = re.sub(r'"[^"]*"', '""', expression)
    text = re.sub(r"\[[^\]]*\]", "", text)
    grouping = r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)"
    labels = {label.strip() for clause in re.findall(grouping, text) for label in clause.split(",") if label.strip()}
    text = re.sub(grouping, "", text)
    matcher = r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)"
    labels |= set(re.findall(matcher, text))
    text = re.sub(matcher, "", text)
    functions = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*\(", text))
    operators = {"and", "or", "unless", "bool", "offset"}
    metrics = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)) - functions - operators
    return metrics, labels


def unserved_names(expression: str, series: dict[str, set[str]]) -> list[str]:
    """List the metrics of the expression that rtim does not serve, and the
    labels that none of its metrics carries."""
    metrics, labels = query_names(expression)
    problems = [f"metric {name}" for name in sorted(metrics - series.keys())]
    allowed = set(TARGET_LABELS)
    for name in metrics & series.keys():
        allowed |= series[name]
    problems += [f"label {name}" for name in sorted(labels - allowed)]
    return problems


def operations_queries() -> list[str]:
    """Return the inline PromQL of docs/operations.md from its metrics
    section on: every code span with a selector or a function call."""
    text = (manifests.ROOT / "docs" / "operations.md").read_text()
    text = text[text.index("## Reading the metrics") :]
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    spans = [span.replace("\\|", "|") for span in re.findall(r"`([^`]+)`", text)]
    return [span for span in spans if "(" in span or "{" in span]


def dashboard_config_map(values: dict[str, Any] | None) -> dict[str, Any] | None:
    objects = manifests.render_chart(values)
    return next((item for item in objects if item["metadata"]["name"] == "rtim-grafana-dashboard"), None)


def test_telemetry_table_parses():
    series = served_series()
    assert series["grpc_server_handled_total"] == {"grpc_service", "grpc_method", "grpc_code"}
    assert series["rtim_consumer_dead_lettered_total"] == {"consumer", "reason"}
    assert series["rtim_ingestion_events_total"] == {"outcome"}
    assert "grpc_server_handling_seconds_bucket" in series


def test_query_names_parse():
    expression = 'sum by (grpc_service, le) (rate(grpc_server_handling_seconds_bucket{job="a", grpc_code=~"OK"}[5m])) > 0'
    assert query_names(expression) == ({"grpc_server_handling_seconds_bucket"}, {"grpc_service", "le", "job", "grpc_code"})
    assert unserved_names("max by (consumer_name) (jetstream_consumer_num_pending)", served_series()) == [
        "metric jetstream_consumer_num_pending",
        "label consumer_name",
    ]


def test_default_alerts_read_served_series():
    series = served_series()
    expressions = rule_expressions({"metrics": {"prometheusRule": {"enabled": True}}})
    assert len(expressions) == 4, expressions
    for expression in expressions:
        assert query_names(expression)[0], f"no metric in {expression}"
        problems = unserved_names(expression, series)
        assert not problems, f"not in docs/telemetry.md: {problems} in {expression}"


def test_operations_queries_read_served_series():
    series = served_series()
    queries = operations_queries()
    assert len(queries) > 15, queries
    for query in queries:
        problems = unserved_names(query, series)
        assert not problems, f"not in docs/telemetry.md: {problems} in {query}"


def test_chart_dashboard_matches_deploy_copy():
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(), (
        f"{CHART_DASHBOARD.relative_to(manifests.ROOT)} differs from "
        f"{DASHBOARD.relative_to(manifests.ROOT)}: copy the dashboard into the chart again"
    )


def test_dashboard_config_map_off_by_default():
    assert dashboard_config_map(None) is None


def test_dashboard_config_map_carries_dashboard():
    values = {"metrics": {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "rtim"}}}}
    config_map = dashboard_config_map(values)
    assert config_map is not None, "no ConfigMap rtim-grafana-dashboard"
    assert config_map["metadata"]["namespace"] == manifests.NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "rtim"}
    assert json.loads(config_map["data"]["rtim-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    kubernetes_validate.validate(config_map, manifests.KUBE_VERSION.lstrip("v"), strict=True)


def test_dashboard_config_map_namespace_and_label():
    values = {
        "metrics": {
            "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "label": "dashboards", "labelValue": "rtim"}
        }
    }
    config_map = dashboard_config_map(values)
    assert config_map is not None, "no ConfigMap rtim-grafana-dashboard"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["dashboards"] == "rtim"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"], "the label replaces the default"
    assert "annotations" not in config_map["metadata"]
