"""What the scorer's fork server loads once, before it forks any worker (serving.scoring.runner).

- The modules a worker runs (MLflow's pyfunc, LightGBM and this project's bucket steps): a spawned
  worker spent 4-7 s of CPU importing them, each, every run. The pyfunc's model class is in
  training.model; its predictor, training.tree_predict, imports numba.
- The kernels every chunk's features use (hashing ids; reading fixed-width ids and numbering
  them; the history sums and orders; the latest profile snapshots; the topic counts): numba's first dispatch in a process builds its compiler's registries, about 1 s
  of CPU even when the kernel comes from numba's cache, and each kernel is then loaded once.
- All of it with the collector paused, then frozen (serving.collector.frozen_imports): the workers
  neither scan those objects again nor copy their pages.

Nothing here starts a thread (no OpenMP, no Arrow pool): a forked worker would not have it.
"""

from __future__ import annotations

import importlib

from serving.collector import frozen_imports

MODULES = ("serving.scoring.buckets", "serving.scoring.population_tasks", "training.model",
           "training.tree_predict", "lightgbm", "mlflow.pyfunc")
KERNELS = ("features.ingest.id_hashes", "features.digit_ids", "features.first_appearance",
           "features.families.line_sums", "features.families.orders", "features.families.profiles",
           "features.families.interaction_sums")

with frozen_imports():
    for _name in MODULES:
        importlib.import_module(_name)
    for _name in KERNELS:
        importlib.import_module(_name).compile_kernels()
