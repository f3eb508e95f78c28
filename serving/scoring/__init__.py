"""The batch scorer: every customer valued, ranked, tiered and explained, on one machine or on Dask."""
