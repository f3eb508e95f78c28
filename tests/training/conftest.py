"""Small generated worlds shared by the training tests (generated once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Directory of a 2,000-customer generated world ending 2025-12-31, on which the learned model
    (with the SMALL settings) ranks better than every baseline."""
    from features.synthetic.world import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, n_customers=2000, seed=11, end_date="2025-12-31")
    return out


@pytest.fixture(scope="session")
def tiny_tables(tiny_world):
    from features.ingest.source import load_source

    return load_source(tiny_world).tables


@pytest.fixture(scope="session")
def small_base(tmp_path_factory):
    """Directory of a 200-customer world: too small for a learned model to beat buy-till-you-die."""
    from features.synthetic.world import generate_world

    out = tmp_path_factory.mktemp("small-base")
    generate_world(out, n_customers=200, seed=3, end_date="2025-12-31")
    return out
