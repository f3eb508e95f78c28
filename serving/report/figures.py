"""The report's charts as PNG bytes: readable in greyscale (hatches, markers, line styles, direct labels).

Each function takes the documented frame and returns a matplotlib Figure; ``png_bytes`` renders it
without timestamps, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

INK = "#1b1b1b"
SOCIAL_FILL = "#9ecae1"
CRM_FILL = "#3a5f8a"
SOCIAL_HATCH = "///"
# Print resolution: slides and print need at least 1,600 pixels across (8 inches at 200 dpi).
PRINT_DPI = 200
MIN_WIDTH_PX = 1600
# One (marker, line style, grey level) per series: distinguishable without colour.
SERIES_STYLES = (
    {"marker": "o", "linestyle": "-", "color": "#1f3b5c"},
    {"marker": "s", "linestyle": "--", "color": "#8c5a00"},
    {"marker": "^", "linestyle": ":", "color": "#5a5a5a"},
    {"marker": "D", "linestyle": "-.", "color": "#6b2e5f"},
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titleweight": "bold"})
    return plt


def png_bytes(fig, *, dpi: int = PRINT_DPI, min_width: int = MIN_WIDTH_PX) -> bytes:
    """The figure as PNG bytes at print resolution, closed afterwards; no creation time or software stamp.

    The tight bounding box trims a figure's margins, so a figure that would be narrower than
    ``min_width`` pixels is drawn at the resolution that reaches it. The trimmed width is measured
    from the artists' extents first (no pixels drawn), so the figure is drawn once, not twice; if
    rounding still leaves it short, it is drawn again (the same inputs still give the same bytes).
    """
    plt = _pyplot()
    width = _tight_width(fig, dpi)
    if width < min_width:
        dpi = math.ceil(dpi * min_width / width) + 1
    png = _png(fig, dpi)
    if png_width(png) < min_width:
        png = _png(fig, math.ceil(dpi * min_width / png_width(png)) + 1)
    plt.close(fig)
    return png


def _tight_width(fig, dpi: int) -> int:
    """The width in pixels of the figure saved at ``dpi`` with a tight bounding box, from its
    artists' extents (the same box savefig computes), without drawing it."""
    import matplotlib as mpl

    pad = mpl.rcParams["savefig.pad_inches"]
    fig.set_dpi(dpi)
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    return max(1, round((box.width + 2 * (pad if isinstance(pad, int | float) else 0.0)) * dpi))


def _png(fig, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return buffer.getvalue()


def png_width(png: bytes) -> int:
    """Width in pixels from a PNG's IHDR chunk (big-endian uint32 at bytes 16-20)."""
    return int.from_bytes(png[16:20], "big")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _percent_axis():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{100 * v:.0f}%")


def family_importance_chart(families: pd.DataFrame):
    """Horizontal bars of each family's share of attribution; social families hatched and labelled.

    ``families``: family, share, social (bool), sorted largest first.
    """
    plt = _pyplot()
    rows = families.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.3))
    bars = ax.barh(
        [f"{f} (social)" if s else f for f, s in zip(rows["family"], rows["social"])],
        rows["share"], color=[SOCIAL_FILL if s else CRM_FILL for s in rows["social"]],
        edgecolor=INK, linewidth=0.8,
    )
    for bar, social in zip(bars, rows["social"]):
        if social:
            bar.set_hatch(SOCIAL_HATCH)
    top = float(rows["share"].max()) if len(rows) else 1.0
    for bar, share in zip(bars, rows["share"]):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, _percent(share),
                va="center", fontsize=9, color=INK)
    ax.set_xlim(0, top * 1.18 if top > 0 else 1)
    ax.xaxis.set_major_formatter(_percent_axis())
    ax.set_xlabel("share of what moves the model's predictions")
    ax.set_title("What the model relies on, by kind of data")
    return fig


def feature_importance_chart(features: pd.DataFrame):
    """Horizontal bars of the largest features' shares, with the direction of their effect as text.

    ``features``: feature, share, social (bool), effect (short text such as "higher -> more value").
    """
    plt = _pyplot()
    rows = features.iloc[::-1]
    fig, ax = plt.subplots(figsize=(8.5, 0.36 * len(rows) + 1.3))
    bars = ax.barh(rows["feature"], rows["share"],
                   color=[SOCIAL_FILL if s else CRM_FILL for s in rows["social"]], edgecolor=INK, linewidth=0.6)
    for bar, social in zip(bars, rows["social"]):
        if social:
            bar.set_hatch(SOCIAL_HATCH)
    top = float(rows["share"].max()) if len(rows) else 1.0
    for bar, share, effect in zip(bars, rows["share"], rows["effect"]):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{_percent(share)}  {effect}", va="center", fontsize=8, color=INK)
    ax.set_xlim(0, top * 1.6 if top > 0 else 1)
    ax.xaxis.set_major_formatter(_percent_axis())
    ax.set_xlabel("share of what moves the model's predictions; hatched = social media data")
    ax.set_title(f"The {len(rows)} customer facts the model relies on most")
    return fig


def binned_means(x: np.ndarray, y: np.ndarray, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Mean of y within quantile bins of x (bins with equal x collapse), for a trend line over a cloud."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return np.array([x.mean()]), np.array([y.mean()])
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": which, "x": x, "y": y}).groupby("bin").mean()
    return frame["x"].to_numpy(), frame["y"].to_numpy()


def dependence_chart(values: pd.Series, contributions: pd.Series, *, feature: str, currency: str | None = ""):
    """Feature value against its signed contribution to predicted value (currency), with a binned mean line.

    ``values`` and ``contributions`` are aligned; rows whose value is missing are left out (the caption
    reports how many).
    """
    plt = _pyplot()
    known = values.notna().to_numpy() & np.isfinite(contributions.to_numpy(np.float64))
    x = values.to_numpy(np.float64)[known]
    y = contributions.to_numpy(np.float64)[known]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(x, y, s=7, alpha=0.25, color="#3a5f8a", edgecolors="none", label="one customer")
    if len(x):
        bx, by = binned_means(x, y)
        ax.plot(bx, by, marker="o", linestyle="-", color=INK, linewidth=1.6, markersize=5, label="binned mean")
    ax.axhline(0.0, color="#555555", linestyle="--", linewidth=0.9)
    ax.text(1.0, 0.0, " no effect", transform=ax.get_yaxis_transform(), va="bottom", ha="right",
            fontsize=8, color="#555555")
    ax.set_xlabel(feature)
    ax.set_ylabel(f"contribution to predicted value{f' ({currency})' if currency else ''}")
    ax.set_title(f"Effect of {feature}")
    ax.legend(loc="best", fontsize=8, frameon=False)
    return fig


def decile_lift_chart(deciles: pd.DataFrame):
    """Share of realised value captured by each predicted decile, one marker/line style per model.

    ``deciles``: model, decile, share_of_actual (training.metrics.decile_table layout).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for style, (model, part) in zip(SERIES_STYLES, deciles.groupby("model", sort=False)):
        ax.plot(part["decile"], 100 * part["share_of_actual"], label=model, linewidth=1.6, markersize=6, **style)
    ax.axhline(10.0, color="#777777", linestyle=(0, (1, 3)), linewidth=1)
    ax.text(1, 10.0, "random order (10% each)", va="bottom", fontsize=8, color="#555555")
    ax.set_xticks(range(1, 11))
    ax.set_xlim(0.6, 10.4)
    ax.set_xlabel("predicted decile (10 = highest predicted value)")
    ax.set_ylabel("share of realised value (%)")
    ax.set_title("Where the realised value lands, by predicted decile")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return fig


def calibration_chart(deciles: pd.DataFrame, *, currency: str | None = ""):
    """Mean predicted vs mean realised value per predicted decile, against the diagonal of perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 5.2))
    both = pd.concat([deciles["mean_predicted"], deciles["mean_actual"]])
    low, high = float(both.min()), float(both.max())
    pad = 0.05 * (high - low if high > low else 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#777777", linestyle=(0, (1, 3)), linewidth=1)
    ax.text(high, high, "perfect calibration ", ha="right", va="top", fontsize=8, color="#555555", rotation=0)
    for style, (model, part) in zip(SERIES_STYLES, deciles.groupby("model", sort=False)):
        ax.plot(part["mean_predicted"], part["mean_actual"], label=model, linewidth=1.2, markersize=6, **style)
    unit = f" ({currency})" if currency else ""
    ax.set_xlabel(f"mean predicted value per customer{unit}")
    ax.set_ylabel(f"mean realised value per customer{unit}")
    ax.set_title("Calibration by predicted decile")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return fig


def quadrant_chart(frame: pd.DataFrame, *, influence_label: str, influence_median: float,
                   value_threshold: float, cells: pd.DataFrame):
    """Influence (x) against predicted value (y, log) for customers with social data, split at the cut points.

    ``frame``: influence, predicted. ``cells``: influence_group, value_group, customers,
    share_of_predicted_value (the quadrant table), used for the direct labels in each corner.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    y_floor = max(float(frame["predicted"][frame["predicted"] > 0].min()) if (frame["predicted"] > 0).any() else 1.0,
                  1e-2)
    y = frame["predicted"].clip(lower=y_floor)
    top = frame["predicted"] >= value_threshold
    ax.scatter(frame["influence"][~top], y[~top], s=8, alpha=0.3, marker="o", color="#5a5a5a",
               edgecolors="none", label="rest (circles)")
    ax.scatter(frame["influence"][top], y[top], s=14, alpha=0.6, marker="^", color="#1f3b5c",
               edgecolors="none", label="top 20% by predicted value (triangles)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axvline(influence_median, color=INK, linestyle="--", linewidth=1)
    ax.axhline(max(value_threshold, y_floor), color=INK, linestyle="-.", linewidth=1)
    corners = {
        ("high", "top"): (0.98, 0.97, "right", "top"),
        ("low", "top"): (0.02, 0.97, "left", "top"),
        ("high", "rest"): (0.98, 0.03, "right", "bottom"),
        ("low", "rest"): (0.02, 0.03, "left", "bottom"),
    }
    names = {("high", "top"): "reach and value", ("low", "top"): "value, little reach",
             ("high", "rest"): "reach, little value", ("low", "rest"): "neither"}
    for _, cell in cells.iterrows():
        key = (cell["influence_group"], cell["value_group"])
        if key not in corners:
            continue
        x, yy, ha, va = corners[key]
        ax.text(x, yy, f"{names[key]}\n{int(cell['customers']):,} customers, "
                       f"{_percent(cell['share_of_predicted_value'])} of value",
                transform=ax.transAxes, ha=ha, va=va, fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#999999", "alpha": 0.9})
    ax.set_xlabel(f"{influence_label} (dashed line: median among customers with social data)")
    ax.set_ylabel("predicted value (log scale; dash-dot line: top-20% cut)")
    ax.set_title("Influence x value")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    return fig
