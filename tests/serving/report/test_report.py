"""The stakeholder report: honest sentences, the influence x value quadrant, and one self-contained page."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from serving.plain_words import label
from serving.report import build
from serving.report.build import build_report
from serving.report.content import (
    ablation_table,
    decile_data,
    effect_text,
    family_importance,
    influence_measure,
    influence_value_quadrant,
    lift_sentence,
    quadrant_sentence,
    social_headline,
    social_share,
    top_value_flags,
)
from serving.report.run_record import RunRecord
from serving.report.sections import _dependence_section

pytestmark = pytest.mark.slow

IMPORTANCE = pd.DataFrame({
    "feature": ["spend_365d", "followers_log", "topical_share", "tenure_days", "pagerank"],
    "family": ["history", "social", "topical", "history", "network"],
    "mean_abs_shap": [0.5, 0.2, 0.1, 0.1, 0.1],
    "share": [0.5, 0.2, 0.1, 0.1, 0.1],
    "direction": [0.9, 0.1, 0.7, -0.5, np.nan],
})


# ---------------------------------------------------------------------------------------------
# Sentences and summaries


def test_family_importance_sums_feature_shares_and_flags_social_families():
    expected = pd.DataFrame({
        "family": ["history", "social", "network", "topical"],
        "features": [2, 1, 1, 1],
        "mean_abs_shap": [0.6, 0.2, 0.1, 0.1],
        "share": [0.6, 0.2, 0.1, 0.1],
        "social": [False, True, True, True],
    })
    pd.testing.assert_frame_equal(family_importance(IMPORTANCE), expected, check_dtype=False)


def test_social_share_counts_only_the_social_families():
    assert social_share(IMPORTANCE) == pytest.approx(0.4)


def test_effect_words_follow_the_direction_of_the_shap_values():
    assert effect_text(0.9) == "higher → more value"
    assert effect_text(-0.5) == "higher → less value"
    assert effect_text(0.1) == "mixed effect"
    assert effect_text(np.nan, 0.05) == "depends on the category"
    assert effect_text(np.nan, 0.0) == "not used by the model"


def test_lift_is_stated_as_added_points_when_the_interval_is_above_zero():
    sentence = lift_sentence(0.012, 0.004, 0.020, who="all test customers")
    assert "social data adds +1.20 points of normalised Gini (90% interval +0.40 to +2.00 points)" in sentence
    assert "covers zero" not in sentence


def test_lift_says_plainly_when_the_interval_covers_zero():
    sentence = lift_sentence(0.001, -0.002, 0.004, who="new customers")
    assert "changes normalised Gini by +0.10 points (90% interval -0.20 to +0.40 points)" in sentence
    assert "The interval covers zero: on this test window we cannot tell" in sentence
    assert "adds" not in sentence


def test_lift_says_when_social_data_makes_ranking_worse():
    sentence = lift_sentence(-0.01, -0.02, -0.005, who="all test customers")
    assert "measurably worse" in sentence


def test_lift_without_an_ablation_is_reported_as_unmeasured():
    assert "could not be measured" in lift_sentence(math.nan, math.nan, math.nan, who="all test customers")


LIFTS = {"social_validation_lift_norm_gini": 0.004, "social_validation_lift_norm_gini_lo": 0.001,
         "social_validation_lift_norm_gini_hi": 0.007, "social_lift_norm_gini": 0.005,
         "social_lift_norm_gini_lo": 0.002, "social_lift_norm_gini_hi": 0.008}


def test_the_report_says_first_when_there_was_no_social_data():
    line = social_headline({"social_decision": "no social data: the source has no social profiles",
                            "social_included": "false"}, {}, IMPORTANCE)
    assert line.startswith("Social data was not available")


def test_the_report_says_social_data_was_tested_and_left_out_with_its_evidence():
    metrics = {**LIFTS, "social_validation_lift_norm_gini": 0.0003, "social_validation_lift_norm_gini_lo": -0.0002,
               "social_validation_lift_norm_gini_hi": 0.0009}
    line = social_headline({"social_decision": "social data left out: ...", "social_included": "false"}, metrics,
                           IMPORTANCE)
    assert line.startswith("Social data was tested and left out: on the validation window it did not improve")
    assert "+0.03 points of normalised Gini (90% interval -0.02 to +0.09)" in line


def test_the_report_says_what_kept_social_data_adds_and_through_which_family():
    line = social_headline({"social_decision": "social data kept: ...", "social_included": "true"}, LIFTS,
                           IMPORTANCE)
    assert line.startswith("Social data improves ranking and is kept")
    assert "on the test window it adds +0.50 points of normalised Gini (90% interval +0.20 to +0.80)" in line
    assert line.endswith("mostly through social features.")  # social 0.2 > topical 0.1 > network 0.1
    worse_on_test = {**LIFTS, "social_lift_norm_gini_lo": -0.001}
    line = social_headline({"social_decision": "social data kept: ...", "social_included": "true"}, worse_on_test,
                           IMPORTANCE)
    assert "an interval that does not exclude zero" in line


def test_a_run_before_the_decision_gets_no_headline():
    assert social_headline({}, LIFTS, IMPORTANCE) is None


def test_ablation_table_subtracts_the_model_without_social_data():
    metrics = {"test_norm_gini": 0.80, "test_mae": 100.0}
    ablation = {"test_norm_gini": 0.75, "test_mae": 110.0}
    table = ablation_table(metrics, ablation).set_index("metric")
    assert table.loc["normalised Gini", "difference"] == pytest.approx(0.05)
    assert table.loc["mean absolute error", "difference"] == pytest.approx(-10.0)
    assert np.isnan(table.loc["Spearman correlation", "difference"])


# ---------------------------------------------------------------------------------------------
# Influence x value

PREDICTIONS = pd.DataFrame({
    "customer_id": pd.array(list("ABCDEFGH"), dtype="str"),
    "predicted": [100.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0],
    "actual": [120.0, 0.0, 50.0, 70.0, 10.0, 60.0, 0.0, 40.0],
    "baseline_last_h": [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0],
    "baseline_bgnbd": np.nan,
    "tenure_days": [100.0, 200.0, 400.0, 800.0, 50.0, 900.0, 1000.0, 30.0],
})
SAMPLE = pd.DataFrame({
    "customer_id": pd.array(list("ABCDEFGH"), dtype="str"),
    "influence_score_max": [10.0, np.nan, 50.0, 5.0, 60.0, np.nan, 20.0, 30.0],
    "shap__influence_score_max": [0.0, 0.0, 1.0, -1.0, 2.0, 0.0, -0.5, 0.5],
})


def test_the_top_value_group_never_splits_ties_by_customer_id():
    predictions = pd.DataFrame({"customer_id": ["b", "a", "c", "d"], "predicted": [5.0, 5.0, 5.0, 1.0]})
    # The top half is two customers, but three are tied: none of them can be told apart, none is in.
    flags = top_value_flags(predictions, share=0.5)
    assert not flags.any()
    flags = top_value_flags(predictions, share=0.75)
    assert sorted(flags[flags].index) == ["a", "b", "c"]


def test_quadrant_splits_sampled_customers_by_median_influence_and_top_predicted_value():
    cells, points, median, threshold = influence_value_quadrant(PREDICTIONS, SAMPLE, "influence_score_max")
    # Known influence 5, 10, 20, 30, 50, 60: median 25. Top 20% of 8 customers = A and B (ceil(1.6)).
    assert median == 25.0 and threshold == 90.0
    expected = pd.DataFrame({
        "influence_group": ["high", "high", "low", "low", "none", "none"],
        "value_group": ["top", "rest", "top", "rest", "top", "rest"],
        "cell": ["reach and value", "reach but little value", "value but little reach",
                 "little reach, little value", "value, no social data", "no social data, rest"],
        "value_label": ["top 20%", "rest", "top 20%", "rest", "top 20%", "rest"],
        "customers": [0, 3, 1, 2, 1, 1],
        "share_of_customers": [0.0, 3 / 8, 1 / 8, 2 / 8, 1 / 8, 1 / 8],
        "share_of_predicted_value": [0.0, 170 / 520, 100 / 520, 110 / 520, 90 / 520, 50 / 520],
        "share_of_actual_value": [0.0, 100 / 350, 120 / 350, 70 / 350, 0.0, 60 / 350],
        "mean_predicted": [np.nan, 170 / 3, 100.0, 55.0, 90.0, 50.0],
        # Most reach first in high-influence cells, highest predicted value first elsewhere.
        "examples": ["", "E, C, H", "A", "D, G", "B", "F"],
    })
    pd.testing.assert_frame_equal(cells, expected, check_dtype=False)
    assert points["top"].sum() == 2


def test_customers_without_social_data_are_not_counted_as_low_influence():
    cells, _, _, _ = influence_value_quadrant(PREDICTIONS, SAMPLE, "influence_score_max")
    low = cells[cells["influence_group"] == "low"]["customers"].sum()
    none = cells[cells["influence_group"] == "none"]["customers"].sum()
    assert (low, none) == (3, 2)


def test_quadrant_sentence_names_reach_without_value_and_value_without_reach():
    cells, _, _, _ = influence_value_quadrant(PREDICTIONS, SAMPLE, "influence_score_max")
    sentence = quadrant_sentence(cells, "vendor influence score")
    assert "3 sampled customers have above-median vendor influence score" in sentence
    assert "(e.g. E, C, H)" in sentence
    assert "2 are in the top 20% with below-median or no measured reach" in sentence
    assert f"{100 * 190 / 520:.1f}% of predicted value" in sentence


def test_influence_falls_back_to_followers_when_the_vendor_score_is_sparse():
    sample = pd.DataFrame({
        "followers_log": [1.0, 2.0, 3.0, 4.0, 5.0, np.nan],
        "influence_score_max": [50.0, np.nan, np.nan, np.nan, np.nan, np.nan],
    })
    assert influence_measure(sample)[0] == "followers_log"
    sample["influence_score_max"] = [50.0, 10.0, 20.0, 30.0, 40.0, np.nan]
    assert influence_measure(sample)[0] == "influence_score_max"


def test_decile_charts_leave_out_a_baseline_that_failed_and_say_so():
    table, notes = decile_data(PREDICTIONS, 365)
    assert list(dict.fromkeys(table["model"])) == ["model", "last 365 days"]
    assert len(notes) == 1 and notes[0].startswith("BG/NBD is not shown")


def test_a_missing_dependence_feature_is_skipped_with_a_note():
    record = RunRecord(run_id="r", metrics={}, params={}, tags={}, importance=IMPORTANCE, shap_sample=SAMPLE)
    figures, notes = _dependence_section(record)
    assert [f.name for f in figures] == ["dependence_influence_score_max"]
    assert "topical_share / topical_engagement is not among this model's features: no dependence plot." in notes
    assert "followers_log is not among this model's features: no dependence plot." in notes


# ---------------------------------------------------------------------------------------------
# The page, from a real run in a temporary MLflow store


class PageStructure(HTMLParser):
    """Images (with their figure and caption), tables' header cells, scripts and external references."""

    def __init__(self):
        super().__init__()
        self.images, self.stack, self.th_scopes, self.scripts, self.external = [], [], [], 0, []
        self.figures, self.captions, self.sections = 0, 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append({"src": attrs.get("src", ""), "alt": attrs.get("alt", ""),
                                "in_figure": "figure" in self.stack})
        elif tag == "th":
            self.th_scopes.append(attrs.get("scope"))
        elif tag == "script":
            self.scripts += 1
        elif tag == "figure":
            self.figures += 1
        elif tag == "figcaption":
            self.captions += 1
        elif tag == "section":
            self.sections.append(attrs.get("id"))
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass


@pytest.fixture(scope="module")
def page(built_report):
    parser = PageStructure()
    text = built_report.read_text(encoding="utf-8")
    parser.feed(text)
    return parser, text


def test_the_report_is_one_self_contained_file(page):
    parser, text = page
    assert parser.scripts == 0 and parser.external == []
    assert all(i["src"].startswith("data:image/png;base64,") for i in parser.images)
    assert "default-src 'none'" in text  # the browser itself refuses anything not embedded


def test_every_figure_has_alt_text_and_a_caption(page):
    parser, _ = page
    assert len(parser.images) == 9
    assert all(i["in_figure"] and len(i["alt"]) > 40 for i in parser.images)
    assert parser.figures == parser.captions == len(parser.images)


def test_tables_are_real_tables_with_scoped_headers(page):
    parser, text = page
    assert text.count("<table>") >= 6 and text.count("<caption>") == text.count("<table>")
    assert parser.th_scopes and set(parser.th_scopes) == {"col", "row"}


def test_sections_come_in_reading_order_with_the_summary_first(page):
    parser, _ = page
    assert parser.sections == ["summary", "importance", "dependence", "quadrant", "deciles", "ablation",
                               "model-card"]


def test_the_summary_names_the_three_strongest_drivers(page, tiny_run, tmp_path):
    import mlflow

    _, text = page
    path = mlflow.artifacts.download_artifacts(run_id=tiny_run.run_id, artifact_path="feature_importance.csv",
                                               dst_path=str(tmp_path / "logged"),
                                               tracking_uri=tiny_run.tracking_uri)
    top3 = pd.read_csv(path).sort_values("share", ascending=False)["feature"].head(3).tolist()
    summary = text[text.index('id="summary"'):text.index('id="importance"')]
    drivers = re.findall(r"<li>([^<:]+): the model leans on it", summary)
    assert drivers == [label(feature) for feature in top3]  # plain words, not column names
    assert "points of normalised Gini" in summary
    assert "Influence is one input among many" in summary


def test_the_model_card_names_model_version_run_and_window(page, tiny_run):
    _, text = page
    card = text[text.index('id="model-card"'):]
    assert f"customer-value version {tiny_run.model_version}" in card
    assert tiny_run.run_id in card
    assert "2025-01-01" in card and "365 days" in card


def test_figures_are_written_beside_the_page_and_logged_to_the_run(built_report, tiny_run):
    import mlflow

    pngs = sorted(p.name for p in built_report.parent.glob("*.png"))
    assert pngs == sorted([
        "family_importance.png", "feature_importance.png", "dependence_influence_score_max.png",
        "dependence_topical_share.png", "dependence_followers_log.png", "dependence_referrals_made.png",
        "influence_value_quadrant.png", "decile_lift.png", "calibration.png",
    ])
    client = mlflow.MlflowClient(tracking_uri=tiny_run.tracking_uri)
    logged = sorted(f.path.split("/")[-1] for f in client.list_artifacts(tiny_run.run_id, "report"))
    assert logged == sorted(pngs + ["report.html"])


def test_the_same_run_gives_the_same_report(built_report, tiny_run, mlflow_store, tmp_path):
    again = build_report(run_id=tiny_run.run_id, out_dir=tmp_path)
    for path in built_report.parent.glob("*.png"):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    # Reached by run id instead of alias: only the model URI line of the model card differs.
    first = built_report.read_text().replace("models:/customer-value@champion", "URI")
    second = again.read_text().replace(f"models:/customer-value/{tiny_run.model_version}", "URI")
    assert first == second


def test_a_run_without_report_inputs_still_gets_a_report_that_says_what_is_missing(mlflow_store, tmp_path):
    from tests.serving.conftest import log_tiny_run

    run = log_tiny_run(mlflow_store, n_train=300, n_test=200, register=False, report_inputs=False)
    html = build_report(run_id=run.run_id, out_dir=tmp_path).read_text()
    assert "has no report_inputs/predictions.parquet" in html
    assert "Dependence plots need the run&#39;s report inputs" in html
    assert "Deciles come from the run&#39;s deciles.csv" in html
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "calibration.png", "decile_lift.png", "family_importance.png", "feature_importance.png"]


def test_an_unknown_model_fails_with_a_clear_message(mlflow_store, tmp_path):
    with pytest.raises(LookupError, match="no model models:/no-such-model@champion in the registry"):
        build_report(model_uri="models:/no-such-model@champion", out_dir=tmp_path)
    with pytest.raises(ValueError, match="not both"):
        build_report(model_uri="models:/x@champion", run_id="abc", out_dir=tmp_path)


def test_a_build_that_fails_midway_leaves_the_previous_report_and_no_temporary(
        tiny_run, mlflow_store, tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    previous = {"report.html": b"the previous report", "family_importance.png": b"the previous figure"}
    for name, data in previous.items():
        (out / name).write_bytes(data)

    def broken(page):  # the figures are drawn (and would have been written) by now
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(build, "render_html", broken)
    with pytest.raises(RuntimeError, match="rendering failed"):
        build_report(run_id=tiny_run.run_id, out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == previous
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_report_never_replaces_a_folder_that_holds_other_files(mlflow_store, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not part of a report"):
        build_report(model_uri="models:/customer-value@champion", out_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_without_social_data_the_page_says_so_first_and_leaves_out_the_social_sections(tmp_path):
    from serving.report.page import render_html
    from serving.report.sections import assemble_page

    crm = IMPORTANCE[~IMPORTANCE["family"].isin(["social", "topical", "network"])]
    record = RunRecord(run_id="r1", metrics={"test_norm_gini": 0.8}, params={}, importance=crm,
                       tags={"social_decision": "no social data: the source has no social profiles",
                             "social_included": "false", "as_of": "2026-01-01"})
    page = assemble_page(record)
    assert not page.social_data
    assert page.summary[0].startswith("Social data was not available")
    assert not any("social families" in line for line in page.summary)
    html = render_html(page)
    assert 'id="quadrant"' not in html and 'id="ablation"' not in html and "#ablation" not in html
