"""Training: out-of-time evaluation against baselines, the social ablation, MLflow tracking and registry.

pipeline.py is the one pipeline; pandas_engine.py and dask_engine.py supply its windows and fitter;
train.py runs it as an MLflow run (run_log.py logs it, registry.py promotes it).
"""
