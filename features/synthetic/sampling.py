"""Categorical draws as small integer codes (regions, categories, channels, networks, kinds...)."""

from __future__ import annotations

import numpy as np


def draw_codes(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """n draws of category codes with the given probabilities (int8)."""
    cum = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(probs) - 1).astype(
        np.int8
    )
