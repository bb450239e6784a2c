"""/metrics: the erasure SLO in Prometheus' text format, read from the sources at scrape time.

A custom collector (no counters kept in this process): every scrape reads the models' views, so a
restarted dashboard exports the same values, and two dashboards agree. Metric names are a contract
(infra/production/alerts.yml and grafana-dashboard.json use them; docs/dashboard.md lists them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dashboard.records import rejections_by_reason
from dashboard.snapshot import ModelView, Views

# Seconds: from a local run (seconds) to the nightly schedule (hours) to the legal deadline (30 days).
ERASURE_BUCKETS = (10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400,
                   30 * 86400, float("inf"))


class ErasureCollector(Collector):
    """Reads every known model's view when Prometheus scrapes."""

    def __init__(self, views: Views):
        self.views = views

    def collect(self) -> Iterator[Any]:
        views = self.views.get_all()
        yield from families(views, self.views.settings.slo.deadline_s, self.views.settings.slo.warning_s)


def families(views: list[ModelView], deadline_s: float, warning_s: float) -> list[Any]:
    """The metric families of these views (pure: a unit test feeds it views it made)."""
    f = {
        "requests": GaugeMetricFamily("lau_requests", "Deletion requests in the ledger, by status",
                                      labels=["model", "status"]),
        "oldest": GaugeMetricFamily("lau_oldest_open_request_age_seconds",
                                    "Age of the oldest request not erased yet (pending, running or failed); "
                                    "0 when none is open", labels=["model"]),
        "duration": HistogramMetricFamily("lau_erasure_duration_seconds",
                                          "Time to erasure of registered requests: submitted to registered",
                                          labels=["model"]),
        "rejections": CounterMetricFamily("lau_gate_rejections", "Rejected requests by failed gate check "
                                          "('input': refused before the gate)", labels=["model", "check"]),
        "champion": GaugeMetricFamily("lau_champion_version", "Version number the champion alias points at",
                                      labels=["model"]),
        "lineage_ok": GaugeMetricFamily("lau_champion_lineage_ok", "1 when the champion passes the tamper "
                                        "check (a gated lineage that honours every erasure), else 0",
                                        labels=["model"]),
        "erased": GaugeMetricFamily("lau_erased_classes", "Classes the model has erased (its erasure record and "
                                    "its registered requests)",
                                    labels=["model"]),
        "consolidation": GaugeMetricFamily("lau_last_consolidation_timestamp_seconds",
                                           "Creation time of the newest consolidated version (absent: never)",
                                           labels=["model"]),
        "deadline": GaugeMetricFamily("lau_erasure_deadline_seconds",
                                      "slo.erasure_deadline_days in seconds", labels=["model"]),
        "warning": GaugeMetricFamily("lau_erasure_warning_age_seconds", "Age at which an open request "
                                     "is a warning: slo.warning_fraction of the deadline", labels=["model"]),
        "up": GaugeMetricFamily("lau_dashboard_source_up", "1 when the dashboard could read the source "
                                "for this model (s3: ledger and erasures; mlflow: registry)",
                                labels=["model", "source"]),
    }
    for view in views:
        _add(f, view, deadline_s, warning_s)
    return list(f.values())


def _add(f: dict[str, Any], view: ModelView, deadline_s: float, warning_s: float) -> None:
    m = view.model
    f["deadline"].add_metric([m], deadline_s)
    f["warning"].add_metric([m], warning_s)
    f["up"].add_metric([m, "s3"], 0.0 if view.requests is None else 1.0)
    f["up"].add_metric([m, "mlflow"], 0.0 if view.versions is None else 1.0)
    if view.requests is not None:
        for status, count in view.counts.items():
            f["requests"].add_metric([m, status], count)
        f["oldest"].add_metric([m], round(view.oldest_open_age_s(), 3))
        durations = [d for r in view.requests if (d := r.erasure_s) is not None]
        buckets = [(floatToGoString(bound), sum(1 for d in durations if d <= bound)) for bound in ERASURE_BUCKETS]
        f["duration"].add_metric([m], buckets, sum_value=sum(durations))
        for check, count in rejections_by_reason(view.requests).items():
            f["rejections"].add_metric([m, check], count)
    if view.erased_classes is not None:
        f["erased"].add_metric([m], len(view.erased_classes))
    if view.champion is not None and view.champion.version.isdigit():
        f["champion"].add_metric([m], int(view.champion.version))
        f["lineage_ok"].add_metric([m], 0.0 if view.tamper else 1.0)
    if view.consolidation is not None and view.consolidation.created_at is not None:
        f["consolidation"].add_metric([m], view.consolidation.created_at.timestamp())


def exposition(views: Views) -> bytes:
    """The text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ErasureCollector(views))
    return generate_latest(registry)
