"""What a training run did, for the terminal and the run's metrics_vs_baselines.json."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.metrics import METRIC_NAMES


@dataclass
class TrainSummary:
    """The run, the registered version and its promotion, the windows, rows and metrics."""

    run_id: str
    experiment: str
    tracking_uri: str
    model_name: str
    model_version: str | None
    aliases: list[str]
    promotion: str
    promotion_reason: str
    windows: dict[str, object]
    rows: dict[str, int]
    metrics: dict[str, float]
    bgnbd_status: str
    ui_command: str
    seconds: float
    model_kind: str = "lightgbm"  # or fallback:<baseline>
    verdict: str = ""  # why the model (or a baseline) is served
    window_plan: str = ""  # how the windows were sized
    social_decision: str = ""  # whether social data is in the model, and the evidence

    def comparison(self) -> dict[str, dict[str, float | None]]:
        """metric -> {model, last_h, bgnbd, without_social} on the test window."""
        return comparison(self.metrics)


def comparison(metrics: dict) -> dict[str, dict[str, float | None]]:
    """metric -> {model, last_h, bgnbd, without_social} on the test window (None where absent)."""
    return {
        name: {
            "model": metrics.get(f"test_{name}"),
            "last_h": metrics.get(f"baseline_last_h_test_{name}"),
            "bgnbd": metrics.get(f"baseline_bgnbd_test_{name}"),
            "without_social": metrics.get(f"ablation_test_{name}"),
        }
        for name in METRIC_NAMES
    }


def print_summary(summary: TrainSummary, console=None) -> None:
    """The end-of-run summary: windows, rows, metrics vs baselines, run, version, aliases, UI command."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    w = summary.windows
    console.print(f"[bold]Customer-value training[/bold]  as_of {w['as_of']}  test cutoff {w['test_cutoff']}")
    console.print(
        f"  training windows {', '.join(w['train_cutoffs'])}; early stopping on "
        f"{', '.join(w['validation_cutoffs'])}; refit windows {', '.join(w['refit_cutoffs'])}"
    )
    if summary.window_plan:
        console.print(f"  windows: {summary.window_plan}")
    console.print("  rows: " + ", ".join(f"{k} {v:,}" for k, v in summary.rows.items()))
    table = Table(title="Test window: model vs baselines")
    for column in ("metric", "model", "last H days", "BG/NBD", "without social"):
        table.add_column(column, justify="right" if column != "metric" else "left")

    def fmt(v):
        return "-" if v is None or not np.isfinite(v) else f"{v:,.3f}"

    for name, row in summary.comparison().items():
        table.add_row(name, fmt(row["model"]), fmt(row["last_h"]), fmt(row["bgnbd"]), fmt(row["without_social"]))
    console.print(table)
    m = summary.metrics
    if "social_lift_norm_gini" in m:
        def lift(v):
            return "-" if v is None or not np.isfinite(v) else f"{v:+.4f}"

        console.print(
            f"  social lift on the test window (norm gini, customers and refits): "
            f"{lift(m['social_lift_norm_gini'])} "
            f"[{lift(m['social_lift_norm_gini_lo'])}, {lift(m['social_lift_norm_gini_hi'])}]; "
            f"tenure < 1 year: {lift(m['social_lift_norm_gini_new'])} "
            f"[{lift(m['social_lift_norm_gini_new_lo'])}, {lift(m['social_lift_norm_gini_new_hi'])}]"
        )
    if summary.social_decision:
        console.print(f"  {summary.social_decision}", markup=False)
    shares = {k.removeprefix("shap_share_"): v for k, v in m.items() if k.startswith("shap_share_")}
    console.print("  SHAP share: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    for line, warn in interval_lines(m):
        console.print(f"  [yellow]{line}[/yellow]" if warn else f"  {line}", highlight=False)
    if not summary.bgnbd_status.startswith("ok"):
        console.print(f"  [yellow]BG/NBD baseline {summary.bgnbd_status}[/yellow]")
    if summary.model_kind != "lightgbm":
        console.print(f"  [yellow]registered a fallback ({summary.model_kind}): {summary.verdict}[/yellow]")
    console.print(f"  run {summary.run_id}  model {summary.model_name} v{summary.model_version} "
                  f"({summary.model_kind}) aliases {', '.join(summary.aliases)}")
    console.print(f"  promotion: {summary.promotion} ({summary.promotion_reason})")
    console.print(f"  open the MLflow UI: [bold]{summary.ui_command}[/bold]  ({summary.seconds:.0f} s)")


COVERAGE_RANGE = (0.7, 0.9)  # measured coverage of the 80% intervals outside this deserves a warning


def interval_lines(metrics: dict) -> list[tuple[str, bool]]:
    """The value intervals' test coverage in one line, plus a warning line when it is outside
    COVERAGE_RANGE; (text, is_warning) pairs, none for a run without intervals."""
    coverage = metrics.get("test_interval_coverage")
    if coverage is None or not np.isfinite(coverage):
        return []
    level = metrics.get("interval_level", 0.8)
    lines = [(f"{level:.0%} value intervals: {coverage:.2f} of test customers inside (calibrated on validation)",
              False)]
    low, high = COVERAGE_RANGE
    if not low <= coverage <= high:
        verdict = "too narrow" if coverage < low else "too wide"
        warning = (f"warning: the value intervals cover {coverage:.2f} of test customers, outside "
                   f"{low:.1f}-{high:.1f}: the p10/p90 in the scores are {verdict} for this data")
        lines.append((warning, True))
    return lines
