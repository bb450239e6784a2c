"""What the dashboard makes of ledger records and version tags: ages, SLO colours, time to erasure,
rejection reasons, the lineage and its drop against the root."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dashboard.records import last_consolidation, lineage, rejections_by_reason, request_row, status_counts
from dashboard.settings import Slo, load_settings
from lau.config import load_params
from lau.errors import BadInput
from tests.dashboard.conftest import ledger_object, version

DAY = 86400.0


def test_slo_colours_an_open_request_by_its_age_against_the_deadline():
    slo = Slo(deadline_s=30 * DAY, warning_fraction=0.8)
    assert [slo.state(d * DAY) for d in (0, 23.9, 24, 29.9, 30, 45)] == ["ok", "ok", "warn", "warn", "late", "late"]


def test_time_to_erasure_runs_from_submission_to_registration(now):
    row = request_row(ledger_object("r1", "registered", submitted_days_ago=2, took_s=3600))
    assert row.erasure_s == pytest.approx(3600)
    assert not row.is_open and row.gate_passed is True and row.failed_checks == ()
    pending = request_row(ledger_object("r2", "pending", submitted_days_ago=2))
    assert pending.is_open and pending.erasure_s is None and pending.age_s(now) == pytest.approx(2 * DAY)
    failed = request_row(ledger_object("r3", "failed", error="S3 down"))
    assert failed.is_open, "a failed request is retried: it is not erased yet"


def test_rejections_count_each_failed_check_and_refusals_before_the_gate():
    rows = [request_row(ledger_object("a", "rejected", failed=("retain_drop",))),
            request_row(ledger_object("b", "rejected", failed=("retain_drop", "test_forget_acc"))),
            request_row(ledger_object("c", "rejected", error="unknown class 42")),
            request_row(ledger_object("d", "registered"))]
    assert rejections_by_reason(rows) == {"retain_drop": 2, "input": 1, "test_forget_acc": 1}
    assert rows[0].failed_checks[0].describe() == "retain_drop = 5 (must be <= 1)"
    assert status_counts(rows) == {"pending": 0, "running": 0, "registered": 1, "rejected": 3, "failed": 0}


def test_records_from_other_code_versions_are_read_not_refused():
    newer = request_row(ledger_object("n", "pending", flow_run_id="f-123", max_retain_drop=0.5, unknown=1))
    assert newer.flow_run_id == "f-123" and newer.max_retain_drop == 0.5
    older = request_row({"request_id": "o", "submitted_at": "2026-01-01T00:00:00"})
    assert older.status == "pending" and older.classes == () and older.submitted_at.tzinfo is not None
    assert request_row({"status": "pending"}) is None
    assert request_row({"request_id": "x", "submitted_at": "yesterday"}) is None


def test_lineage_runs_root_to_champion_with_the_drop_against_the_root():
    versions = [version(1, method="train", acc=90.0), version(2, parent="1", forgotten=(3,), acc=89.5),
                version(3, parent="2", forgotten=(3, 5), acc=88.0), version(4, parent="1", forgotten=(7,))]
    found = lineage(versions[2], versions)
    assert [s.version.version for s in found.steps] == ["1", "2", "3"]
    assert [s.newly_erased for s in found.steps] == [(), (3,), (5,)]
    assert [s.drop_vs_root for s in found.steps] == [0.0, 0.5, 2.0]
    assert found.champion is versions[2] and found.broken is None


def test_a_consolidated_root_and_its_recorded_root_accuracy_are_used():
    versions = [version(1, method="train", acc=90.0), version(2, parent="1", forgotten=(3,), acc=89.0),
                version(3, method="consolidate", acc=91.0, consolidated_from="2", forgotten=(3,)),
                version(4, parent="3", forgotten=(3, 5), acc=90.0, root_version="3", root_test_retain_acc="91.0")]
    found = lineage(versions[3], versions)
    assert [s.version.version for s in found.steps] == ["3", "4"] and found.root_acc == 91.0
    assert found.steps[-1].drop_vs_root == 1.0
    assert last_consolidation(versions) is versions[2]
    assert last_consolidation(versions[:2]) is None
    without_root = lineage(versions[3], versions[3:])  # the root version was deleted from the registry
    assert without_root.root_acc == 91.0 and without_root.steps[-1].drop_vs_root == 1.0


def test_a_lineage_with_a_missing_parent_says_where_it_stopped():
    versions = [version(2, parent="1", forgotten=(3,))]
    found = lineage(versions[0], versions)
    assert found.broken and "parent 1" in found.broken and len(found.steps) == 1


def test_slo_settings_come_from_params_yaml_and_bad_values_are_refused(tmp_path: Path, repo_root: Path):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert params["slo"] == {"erasure_deadline_days": 30, "warning_fraction": 0.8}
    params["slo"] = {"erasure_deadline_days": 10, "warning_fraction": 0.5}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    settings = load_settings(path, environ={})
    assert settings.slo.deadline_s == 10 * DAY and settings.slo.warning_s == 5 * DAY
    for bad, key in (({"erasure_deadline_days": 0}, "slo.erasure_deadline_days"),
                     ({"warning_fraction": 1.5}, "slo.warning_fraction")):
        path.write_text(yaml.safe_dump({**params, "slo": bad}))
        with pytest.raises(BadInput, match=key):
            load_params(path)


def test_links_point_at_the_configured_user_interfaces(tmp_path: Path, repo_root: Path):
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000/", "PREFECT_API_URL": "http://prefect:4200/api",
           "AWS_ACCESS_KEY_ID": "pipeline", "LAU_VIEWER_AWS_ACCESS_KEY_ID": "viewer",
           "LAU_VIEWER_AWS_SECRET_ACCESS_KEY": "s"}
    settings = load_settings(repo_root / "params.yaml", environ=env)
    assert settings.mlflow_ui == "http://mlflow:5000" and settings.prefect_ui == "http://prefect:4200"
    assert settings.s3_key_id == "viewer", "the viewer's read-only S3 identity wins when set"
    settings = load_settings(repo_root / "params.yaml", environ={**env, "LAU_PREFECT_UI_URL": "https://ui/"})
    assert settings.prefect_ui == "https://ui"


def test_a_scrape_reads_the_models_views_concurrently_in_their_order():
    """/metrics reads every model's view; with a hundred models one at a time took ~1 min, so the
    views are read on a thread pool (dashboard.snapshot.SCRAPE_THREADS) and come back in order."""
    import threading
    import time
    from types import SimpleNamespace

    from dashboard.snapshot import Views

    active, most = [0], [0]
    guard = threading.Lock()

    class Registry:
        def versions(self, model):
            with guard:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.05)
            with guard:
                active[0] -= 1
            return []

        def champion(self, model):
            return None

    class Bucket:
        def children(self, prefix):
            return [f"m{i:02d}" for i in range(12)]

        def json_objects(self, prefix, parse):
            return {}

    views = Views(SimpleNamespace(default_model="m00", ledger_ttl_s=5.0), Bucket(), Registry())
    got = views.get_all()
    assert [v.model for v in got] == [f"m{i:02d}" for i in range(12)]
    assert most[0] > 1
