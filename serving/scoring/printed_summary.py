"""The summary ``clv score`` prints: what was scored, where it went, value per tier, drift, the run."""

from __future__ import annotations

from rich.console import Console

from serving.plain_words import money
from serving.scoring.tracked_run import drift_lines


def economics_lines(summary: dict) -> list[str]:
    """Customers, total and mean predicted value and share of value per tier, money labelled."""
    currency = summary.get("currency")
    horizon = summary.get("horizon_days")
    lines = []
    for tier in summary.get("tier_economics", []):
        share = "" if tier["share_of_value"] is None else f", {tier['share_of_value']:.1%} of the value"
        lines.append(f"{tier['tier']}: {tier['customers']:,} customers, {money(tier['total_value'], currency)} "
                     f"predicted over {horizon} days (mean {money(tier['mean_value'], currency)}){share}")
    return lines


def print_score_summary(summary: dict, console: Console) -> None:
    """Customers in / scored / rejected, model, time, throughput, where the outputs went; then value
    per tier, the interval, the drift check and the scoring run."""
    model = summary.get("model", {})
    tiers = ", ".join(f"{k}: {v:,}" for k, v in summary.get("tiers", {}).items())
    console.print(
        f"scored {summary['scored']:,} of {summary['customers_in']:,} customers as of {summary['as_of']} "
        f"with {model.get('name')} v{model.get('version')} in {summary['seconds']:.1f}s "
        f"({summary['customers_per_second']:,.0f} customers/s); rejected customers: "
        f"{summary['rejected_customers']:,}, not yet customers: {summary.get('not_yet_customers', 0):,}\n"
        f"  tiers: {tiers}\n  -> {summary['output']}\n  -> {summary['manifest']}"
        + (f"\n  rejected rows -> {', '.join(map(str, summary['rejects']))}" if summary.get("rejects") else ""),
        soft_wrap=True,
    )
    for note in summary.get("notes", []):
        console.print(f"  note: {note}", soft_wrap=True, highlight=False)
    if summary.get("missing_tables_allowed"):
        console.print(f"  [yellow]scored without {', '.join(summary['missing_tables_allowed'])} (--allow-missing): "
                      "the model was trained with them, so its predictions differ from what they would be[/yellow]",
                      soft_wrap=True)
    for line in economics_lines(summary):
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    interval = summary.get("interval") or {}
    if interval.get("level"):
        coverage = interval.get("coverage_on_test")
        console.print(f"  value_p10..value_p90: {interval['level']:.0%} range per customer"
                      + (f" ({coverage:.0%} of test-window customers fell inside in training)"
                         if coverage is not None else ""), soft_wrap=True, highlight=False)
    drift = summary.get("drift") or {}
    for line in drift_lines(drift):
        style = "yellow" if drift.get("status") in ("drift", "shift") else None
        console.print(f"  {line}", style=style, soft_wrap=True, highlight=False, markup=False)
    place = summary.get("tracking") or {}
    if place.get("run_id"):
        console.print(f"  scoring run logged: {place['experiment']} / {place['run_id']}", soft_wrap=True,
                      highlight=False)
    elif place.get("error"):
        console.print(f"  [yellow]scoring run not logged: {place['error']}[/yellow]", soft_wrap=True)
    kind = model.get("kind", "lightgbm")
    if kind != "lightgbm":
        console.print(f"  [yellow]this model is a {kind}: training found the learned model worse than that "
                      "baseline and registered the baseline in its place[/yellow]", soft_wrap=True)
