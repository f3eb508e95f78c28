"""The feature families: pure functions of the contract tables and a cutoff (see features.catalog)."""
