"""The training run's PNG charts: predicted vs realised value by decile, and feature importance."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def decile_chart(table: pd.DataFrame, path, *, title: str = "Predicted vs realised value by decile") -> None:
    """PNG: mean realised value per predicted decile for each model (bars) and the model's mean prediction (line)."""
    plt = _pyplot()
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        part = table[table["model"] == model]
        ax.bar(part["decile"], part["mean_actual"], color="#4C72B0", alpha=0.8, label="mean realised")
        ax.plot(part["decile"], part["mean_predicted"], "o-", color="#DD8452", label="mean predicted")
        ax.set_title(model)
        ax.set_xlabel("predicted decile (10 = highest)")
        ax.set_xticks(range(1, 11))
    axes[0][0].set_ylabel("value per customer")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importance_chart(importance: pd.DataFrame, path: Path, top: int = 20) -> None:
    """PNG: the top features by mean |SHAP| beside each family's share of the total."""
    plt = _pyplot()
    head = importance.head(top).iloc[::-1]
    families = importance.groupby("family")["share"].sum().sort_values()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.28 * len(head) + 1.8),
                                      gridspec_kw={"width_ratios": [3, 2]})
    left.barh(head["feature"], head["mean_abs_shap"], color="#4C72B0")
    left.set_xlabel("mean |SHAP| (log scale of predicted value)")
    left.set_title(f"Top {len(head)} features")
    right.barh(families.index, families.to_numpy(), color="#55A868")
    right.set_xlabel("share of total mean |SHAP|")
    right.set_title("Families")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
