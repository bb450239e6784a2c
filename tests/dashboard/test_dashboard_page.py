"""The page as HTML, from a view built by hand: ordering, SLO colours, links, a tampered champion in
red, missing sources named, and text from the ledger escaped."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

from dashboard import page
from dashboard.records import lineage, request_row
from dashboard.settings import Settings, Slo
from dashboard.snapshot import ModelView
from tests.dashboard.conftest import NOW, ledger_object, version

DAY = 86400.0
SETTINGS = Settings(default_model="m", alias="champion", slo=Slo(30 * DAY, 0.8), bucket="lau", s3_endpoint=None,
                    s3_key_id=None, s3_secret=None, mlflow_uri="http://mlflow:5000", mlflow_ui="http://mlflow:5000",
                    prefect_ui="http://prefect:4200")


def a_view(**changes) -> ModelView:
    rows = (request_row(ledger_object("young", "pending", submitted_days_ago=1)),
            request_row(ledger_object("late", "pending", submitted_days_ago=31)),
            request_row(ledger_object("amber", "failed", submitted_days_ago=25, error="S3 down")),
            request_row(ledger_object("done", "registered", submitted_days_ago=3, version="2", parent_version="1",
                                      report_uri="s3://lau/reports/m/done/report.html", flow_run_id="fr-1")),
            request_row(ledger_object("no", "rejected", submitted_days_ago=2, failed=("retain_drop",),
                                      parent_version="2", report_uri="s3://lau/reports/m/no/report.html")))
    versions = (version(1, method="train", acc=90.0), version(2, parent="1", forgotten=(3,), acc=89.0))
    view = ModelView(model="m", at=NOW, requests=rows, erasures=(), versions=versions, champion=versions[1],
                     lineage=lineage(versions[1], versions), per_class=((90.0, 0.0), ("a", "b")))
    return replace(view, **changes)


def rows_of(html: str, table: str) -> list[str]:
    body = html.split(f"<table id='{table}'>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr id='req-([^']+)'", body)


def test_open_requests_oldest_first_coloured_against_the_deadline():
    html = page.render(a_view(), SETTINGS, ["m"])
    assert rows_of(html, "open") == ["late", "amber", "young"]
    cells = dict(re.findall(r"<tr id='req-(\w+)'>.*?<td class='age slo-(\w+)'", html))
    assert cells == {"late": "late", "amber": "warn", "young": "ok"}
    assert rows_of(html, "recent") == ["no", "done"], "the most recently finished first"


def test_finished_requests_carry_verdicts_and_links():
    html = page.render(a_view(), SETTINGS, ["m"])
    done = html.split("<tr id='req-done'>", 1)[1].split("</tr>", 1)[0]
    assert "passed" in done and "1 min 0 s" in done
    assert "href='/reports/m/done/report.html'" in done
    assert "href='http://mlflow:5000/#/models/m/versions/2'" in done
    assert "href='http://prefect:4200/runs/flow-run/fr-1'" in done
    rejected = html.split("<tr id='req-no'>", 1)[1].split("</tr>", 1)[0]
    assert "failed: retain_drop = 5 (must be &lt;= 1)" in rejected
    assert "MLflow v2 (parent)" in rejected and "Prefect run" not in rejected


def test_a_champion_failing_the_tamper_check_is_red():
    clean = page.render(a_view(), SETTINGS, ["m"])
    assert "class='tamper'" not in clean and "id='tamper'" not in clean
    html = page.render(a_view(tamper="it has lau.gate='', not 'passed'"), SETTINGS, ["m"])
    assert "fails the tamper check: it has lau.gate=&#x27;&#x27;, not &#x27;passed&#x27;" in html
    champion_row = html.split("<table id='lineage'>", 1)[1].split("</table>", 1)[0].split("<tr")[-1]
    assert champion_row.startswith(" class='tamper'") and "(champion)" in champion_row
    assert "tile slo-late'><b>v2</b>" in html


def test_missing_sources_are_named_and_the_rest_is_still_shown():
    view = ModelView(model="m", at=NOW, missing=("S3 at http://s3 is unreachable (EndpointConnectionError): "
                                                 "requests and erasures cannot be shown",))
    html = page.render(view, SETTINGS, ["m"])
    assert "role='alert'>S3 at http://s3 is unreachable" in html
    assert "The ledger cannot be read." in html and "The registry cannot be read." in html


def test_text_from_the_ledger_is_escaped_and_the_page_is_well_formed():
    hostile = request_row(ledger_object("x", "pending", reason="<script>alert(1)</script>"))
    html = page.render(a_view(requests=(hostile,)), SETTINGS, ["m", "other"])
    assert "<script>" not in html and "&lt;script&gt;" in html
    parser = HTMLParser()
    parser.feed(html)
    assert html.count("<svg") == html.count("</svg>") == 3
    assert "href=\"/models/other\"" in html
