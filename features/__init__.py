"""Contract tables in, point-in-time customer features out: the base package every stage builds on.

ingest/ reads and validates sources (files, PostgreSQL) against the data contract; families/ holds
the pure feature families; build.py assembles them (build_features, the only assembler) and
population.py feeds the population-wide ones in batches; labels.py and windows.py make training
windows; synthetic/ generates worlds to develop and test on; dask_engine/ runs the same code on a
cluster. atomic.py, errors.py and run_request.py are the small rules every stage shares.
"""
