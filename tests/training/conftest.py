"""A tiny generated world shared by the training tests (generated once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Directory of a 1,500-customer generated world ending 2025-12-31."""
    from features.synthetic.world import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, n_customers=1500, seed=7, end_date="2025-12-31")
    return out


@pytest.fixture(scope="session")
def tiny_tables(tiny_world):
    from features.ingest.source import load_source

    return load_source(tiny_world).tables
