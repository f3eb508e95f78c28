"""The report for decision makers (`clv report --scores`): today's tiers and top customers, plain words, money."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.plain_words import label, money
from serving.report.current_scores import load_current_scores, tier_economics
from serving.report.figures import MIN_WIDTH_PX, png_width
from tests.serving.conftest import tracking_to, write_current_scores

CUSTOMER_ID = re.compile(r"\b[CNT]\d{4}\b")  # the tiny run's test (C), training (T) and today's new (N) ids


def section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}"')
    return unescape(html[start:html.index("</section>", start)])


def test_a_report_with_scores_names_only_customers_of_todays_top_tier(scored_report, current_scores, built_report):
    _, scores, back_test = current_scores
    html = scored_report.read_text()
    named = set(CUSTOMER_ID.findall(html))
    top_tier = set(scores.loc[scores["value_tier"] == "top_1pct", "customer_id"])
    assert named and named <= top_tier
    # The back-test's most valuable customers are in today's bottom tier: the page must not name them,
    # though the report without scores does (its quadrant's examples).
    stars = set(back_test.nlargest(120, "predicted")["customer_id"])
    assert set(scores.loc[scores["customer_id"].isin(stars), "value_tier"]) == {"rest"}
    assert named.isdisjoint(stars)
    assert set(CUSTOMER_ID.findall(built_report.read_text())) & stars


def test_the_top_customers_table_lists_the_top_tier_in_rank_order_with_range_and_reason(scored_report, current_scores):
    _, scores, _ = current_scores
    today = section(scored_report.read_text(), "decisions")
    listed = CUSTOMER_ID.findall(today)
    assert listed == scores.loc[scores["value_tier"] == "top_1pct", "customer_id"].tolist()
    first = scores.iloc[0]
    assert money(first["predicted_value"], "EUR") in today
    assert f"{money(first['value_p10'], 'EUR')} to {money(first['value_p90'], 'EUR')}" in today
    assert "Net spend in the last year of EUR 1,380.19 raises the value by EUR 210.50" in today


def test_the_tier_table_adds_up_the_scores_file(current_scores, tmp_path):
    path, scores, _ = current_scores
    expected = scores.groupby("value_tier")["predicted_value"].agg(["size", "sum"])
    tiers = tier_economics(path).set_index("tier")
    assert tiers["customers"].to_dict() == expected["size"].to_dict()
    assert tiers["total_value"].to_dict() == pytest.approx(expected["sum"].to_dict())
    assert tiers["share_of_value"].sum() == pytest.approx(1.0)
    assert list(tiers.index) == ["top_1pct", "top_10pct", "top_50pct", "rest"]


def test_the_page_shows_each_tiers_customers_and_money_with_the_currency(scored_report, current_scores):
    _, scores, _ = current_scores
    today = section(scored_report.read_text(), "decisions")
    for tier, group in scores.groupby("value_tier"):
        assert f"{len(group):,}</td><td class=\"num\">{money(group['predicted_value'].sum(), 'EUR')}</td>" in today, tier
    assert money(scores["predicted_value"].sum(), "EUR") in today


def test_tier_economics_recorded_in_the_manifest_are_used_as_they_are(current_scores, tmp_path):
    import json

    from serving.scoring.core import manifest_path

    _, _, back_test = current_scores
    copy = tmp_path / "scores.parquet"
    recorded = [{"tier": "top_1pct", "customers": 1, "total_value": 99.0, "mean_value": 99.0, "share_of_value": 1.0}]
    write_current_scores(copy, back_test, manifest={"tier_economics": recorded})
    loaded = load_current_scores(copy)
    assert loaded.tiers_from_manifest and loaded.tiers.to_dict("records") == recorded
    assert json.loads(manifest_path(copy).read_text())["tier_economics"] == recorded


def test_the_decision_section_states_coverage_drift_and_currency(scored_report):
    html = scored_report.read_text()
    today = section(html, "decisions")
    assert "on the test window it held for 79.3% of customers" in today
    assert "Drift warning: today's customers differ from those the model learned from, most in: " \
           f"{label('spend_365d')}" in today
    assert "(EUR)" in html[:html.index("<main>")]
    assert html.index('id="summary"') < html.index('id="decisions"') < html.index('id="importance"')


def test_old_scores_without_manifest_or_ranges_still_give_the_section(tiny_run, store_uri, current_scores, tmp_path):
    from serving.report.build import build_report

    _, _, back_test = current_scores
    path = tmp_path / "old.parquet"
    write_current_scores(path, back_test, intervals=False)
    with tracking_to(store_uri):
        html = build_report(out_dir=tmp_path / "report", scores=path).read_text()
    today = section(html, "decisions")
    assert "likely range" not in today and "No value ranges" in today
    assert "Value ranges: coverage not measured" in today
    assert "Drift: no drift check is recorded with these scores." in today
    assert "EUR" not in re.sub(r'src="data:[^"]*"', "", html)  # no currency anywhere: plain amounts


def test_drivers_are_named_in_plain_words(scored_report, tiny_run, tmp_path):
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=tiny_run.run_id, artifact_path="feature_importance.csv",
                                               dst_path=str(tmp_path / "logged"),
                                               tracking_uri=tiny_run.tracking_uri)
    top3 = pd.read_csv(path).sort_values("share", ascending=False)["feature"].head(3).tolist()
    summary = section(scored_report.read_text(), "summary")
    assert re.findall(r"<li>([^<:]+):", summary) == [label(f) for f in top3]
    assert "mean |SHAP|" not in summary and "_" not in re.sub(r"<[^>]+>", "", summary)


def test_every_figure_is_drawn_at_print_resolution(scored_report):
    pngs = list(scored_report.parent.glob("*.png"))
    assert len(pngs) == 9
    for png in pngs:
        assert png_width(png.read_bytes()) >= MIN_WIDTH_PX, png.name


def test_the_page_logged_to_mlflow_names_no_current_customer(scored_report, current_scores, tiny_run, tmp_path):
    import mlflow

    _, scores, _ = current_scores
    with tracking_to(tiny_run.tracking_uri):
        from serving.report.build import build_report

        build_report(out_dir=tmp_path / "report", scores=current_scores[0])
        logged = mlflow.artifacts.download_artifacts(run_id=tiny_run.run_id, artifact_path="report/report.html",
                                                     dst_path=str(tmp_path / "logged"),
                                                     tracking_uri=tiny_run.tracking_uri)
    text = Path(logged).read_text(encoding="utf-8")
    assert 'id="decisions"' in text and "customer ids are never logged to MLflow" in text
    assert not set(CUSTOMER_ID.findall(text)) & set(scores["customer_id"])
    assert set(CUSTOMER_ID.findall((tmp_path / "report" / "report.html").read_text())) & set(scores["customer_id"])


def test_clv_report_takes_scores_and_currency(current_scores, tiny_run, tmp_path):
    from serving.cli import app

    with tracking_to(tiny_run.tracking_uri):
        result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "r"), "--scores", str(current_scores[0]),
                                          "--currency", "USD"])
        assert result.exit_code == 0, result.output
        assert "no customer ids in MLflow" in result.output
        assert money(current_scores[1]["predicted_value"].sum(), "USD") in (tmp_path / "r" / "report.html").read_text()
        bad = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "s"), "--scores", str(tmp_path / "x.csv")])
        missing = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "t"), "--scores",
                                           str(tmp_path / "none.parquet")])
    assert bad.exit_code == 2 and "expected the .parquet file written by clv score" in bad.output
    assert missing.exit_code == 2 and "no such scores file" in missing.output
