"""A report figure is drawn once at print resolution: its trimmed width is measured before it is drawn."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from serving.report import figures

FAMILIES = pd.DataFrame({"family": ["history", "btyd", "social", "network", "referral"],
                         "share": [0.45, 0.3, 0.1, 0.1, 0.05],
                         "social": [False, False, True, True, False]})


def drawn_twice(fig, dpi: int = figures.PRINT_DPI, min_width: int = figures.MIN_WIDTH_PX) -> bytes:
    """The former way: draw at ``dpi``, read the trimmed width, draw again at the dpi reaching min_width."""
    def png(at):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=at, metadata={"Software": None}, bbox_inches="tight")
        return buffer.getvalue()

    first = png(dpi)
    width = figures.png_width(first)
    return first if width >= min_width else png(math.ceil(dpi * min_width / width) + 1)


def test_a_figure_trimmed_below_print_width_is_drawn_once_with_the_same_bytes(monkeypatch):
    expected = drawn_twice(figures.family_importance_chart(FAMILIES))
    assert figures.png_width(expected) >= figures.MIN_WIDTH_PX
    draws = []
    original = figures._png
    monkeypatch.setattr(figures, "_png", lambda fig, dpi: draws.append(dpi) or original(fig, dpi))
    got = figures.png_bytes(figures.family_importance_chart(FAMILIES))
    assert len(draws) == 1 and draws[0] > figures.PRINT_DPI  # trimmed below 1,600 px at 200 dpi
    assert got == expected


@pytest.mark.parametrize("min_width", [400, 2400])
def test_the_figure_reaches_the_width_asked_for(min_width):
    png = figures.png_bytes(figures.family_importance_chart(FAMILIES), min_width=min_width)
    assert figures.png_width(png) >= min_width
