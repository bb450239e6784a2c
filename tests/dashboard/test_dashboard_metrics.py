"""/metrics as Prometheus parses it, from views built by hand; and the production alert rules and
Grafana dashboard use only metrics the dashboard exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dashboard.metrics import families
from dashboard.records import lineage, request_row
from dashboard.snapshot import ModelView
from tasks.erasures import Erasure
from tests.dashboard.conftest import NOW, ledger_object, version

DAY = 86400.0
PRODUCTION = Path(__file__).resolve().parents[2] / "infra" / "production"


class _Static:
    def __init__(self, views):
        self.views = views

    def collect(self):
        return families(self.views, 30 * DAY, 24 * DAY)


def scrape(*views: ModelView) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(list(views)))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def a_view() -> ModelView:
    rows = [request_row(ledger_object("old", "pending", submitted_days_ago=25)),
            request_row(ledger_object("young", "pending", submitted_days_ago=1)),
            request_row(ledger_object("stuck", "failed", submitted_days_ago=3, error="S3 down")),
            request_row(ledger_object("fast", "registered", submitted_days_ago=9, took_s=45)),
            request_row(ledger_object("slow", "registered", classes=(5,), submitted_days_ago=8, took_s=2 * DAY)),
            request_row(ledger_object("no", "rejected", classes=(7,), failed=("retain_drop",)))]
    versions = (version(1, method="train", acc=90.0), version(2, parent="1", forgotten=(3,)),
                version(3, parent="2", forgotten=(3, 5)),
                version(4, method="consolidate", consolidated_from="3", days_ago=2))
    return ModelView(model="m", at=NOW, requests=tuple(rows), versions=versions, champion=versions[2],
                     erasures=(Erasure("m", 3, "fast", "2", "x"),), lineage=lineage(versions[2], versions),
                     consolidation=versions[3])


def test_metrics_count_requests_ages_durations_and_rejections():
    got = scrape(a_view())
    assert {status: got[("lau_requests", (("model", "m"), ("status", status)))]
            for status in ("pending", "running", "registered", "rejected", "failed")} == \
        {"pending": 2, "running": 0, "registered": 2, "rejected": 1, "failed": 1}
    assert got[("lau_oldest_open_request_age_seconds", (("model", "m"),))] == 25 * DAY
    assert got[("lau_erasure_duration_seconds_count", (("model", "m"),))] == 2
    assert got[("lau_erasure_duration_seconds_sum", (("model", "m"),))] == 45 + 2 * DAY
    assert got[("lau_erasure_duration_seconds_bucket", (("le", "60.0"), ("model", "m")))] == 1
    assert got[("lau_erasure_duration_seconds_bucket", (("le", "+Inf"), ("model", "m")))] == 2
    assert got[("lau_gate_rejections_total", (("check", "retain_drop"), ("model", "m")))] == 1
    assert got[("lau_champion_version", (("model", "m"),))] == 3
    assert got[("lau_champion_lineage_ok", (("model", "m"),))] == 1
    assert got[("lau_erased_classes", (("model", "m"),))] == 2, "the erasure record and registered requests"
    assert got[("lau_last_consolidation_timestamp_seconds", (("model", "m"),))] == (NOW.timestamp() - 2 * DAY)
    assert got[("lau_erasure_warning_age_seconds", (("model", "m"),))] == 24 * DAY
    assert got[("lau_dashboard_source_up", (("model", "m"), ("source", "s3")))] == 1


def test_a_source_down_is_a_zero_not_a_made_up_value():
    got = scrape(ModelView(model="m", at=NOW, missing=("S3 down", "MLflow down")))
    assert got[("lau_dashboard_source_up", (("model", "m"), ("source", "s3")))] == 0
    assert got[("lau_dashboard_source_up", (("model", "m"), ("source", "mlflow")))] == 0
    assert not [key for key in got if key[0] in ("lau_requests", "lau_oldest_open_request_age_seconds",
                                                  "lau_champion_version")]


def test_a_tampered_champion_is_flagged():
    view = a_view()
    tampered = ModelView(**{**view.__dict__, "tamper": "it has lau.gate='', not 'passed'"})
    assert scrape(tampered)[("lau_champion_lineage_ok", (("model", "m"),))] == 0


def exported_names() -> set[str]:
    names = set()
    for family in families([a_view()], 30 * DAY, 24 * DAY):
        names |= {s.name for s in family.samples}
    return names


def used_names(expr: str) -> set[str]:
    return set(re.findall(r"\blau_[a-z_]+\b", expr))


def test_alert_rules_use_only_exported_metrics():
    rules = [r for group in yaml.safe_load((PRODUCTION / "alerts.yml").read_text())["groups"] for r in group["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {"LauErasureRequestPastWarning", "LauErasureRequestOverdue", "LauDeletionRejected"} <= alerts
    for rule in rules:
        assert used_names(rule["expr"]) <= exported_names(), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
    scrape_config = yaml.safe_load((PRODUCTION / "prometheus.yml").read_text())
    assert scrape_config["rule_files"] == ["alerts.yml"]
    assert scrape_config["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_grafana_dashboard_uses_only_exported_metrics():
    dashboard = json.loads((PRODUCTION / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set().union(*(used_names(e) for e in exprs))
    assert used <= exported_names(), used - exported_names()
    assert {"lau_requests", "lau_oldest_open_request_age_seconds", "lau_erasure_duration_seconds_bucket",
            "lau_gate_rejections_total", "lau_champion_version", "lau_erased_classes",
            "lau_last_consolidation_timestamp_seconds"} <= used
