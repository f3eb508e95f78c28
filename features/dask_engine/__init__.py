"""The Dask engine: the same contract checks and feature code, run per customer bucket on a cluster.

A run (docs/scaling.md): read every table lazily, numbered by row (read); shuffle customers,
transactions and profile snapshots into buckets of whole customers and validate each bucket with
the contract (validate, source); build each bucket's features with build_features and the
population-wide families once per cutoff (features). cluster says where the work runs.
"""
