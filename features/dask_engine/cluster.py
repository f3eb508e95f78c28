"""Where Dask work runs: a scheduler address, an existing Client, or a local cluster sized to the machine.

Every ``engine="dask"`` entry point takes ``scheduler`` and goes through ``connect``/``cluster``, so
pointing the whole pipeline at a real cluster is one option (``--scheduler tcp://host:8786``).
Workers must be able to import this package and read the source and output paths (shared storage).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

# The P2P shuffle logs every shuffle it starts and stops at WARNING level: routine, not a problem.
QUIET_LOGGERS = ("distributed.shuffle._scheduler_plugin",)


def machine_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the host's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def local_cluster(
    n_workers: int | None = None, *, threads_per_worker: int = 1, memory_limit: str | int = "auto"
):
    """A LocalCluster of worker processes: one single-threaded worker per core by default.

    Single-threaded processes because the feature code is numpy/pandas that holds the GIL for
    long stretches. memory_limit "auto" splits the machine's memory evenly between the workers
    (Dask's own "auto" gives each worker its share of the cores' memory, so one worker on a 2-core
    machine would get half of it and pause at 85% of that).
    """
    from distributed import LocalCluster
    from distributed.system import MEMORY_LIMIT

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    n_workers = n_workers or machine_cores()
    if memory_limit == "auto":
        memory_limit = MEMORY_LIMIT // n_workers
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=None,
    )


def connect(scheduler: str | None = None, **local):
    """A distributed.Client: to ``scheduler`` (``tcp://host:8786``) or, when None, to a new local cluster.

    ``local`` goes to local_cluster (n_workers, threads_per_worker, memory_limit). The caller closes
    the client; a local cluster made here is closed with it (``client.close()`` then
    ``client.cluster.close()``), which ``cluster()`` does for you.
    """
    from distributed import Client

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        return Client(scheduler)
    return Client(local_cluster(**local))


@contextlib.contextmanager
def cluster(scheduler=None, **local) -> Iterator:
    """Context manager around connect(): yields a Client and closes what it opened.

    ``scheduler`` may also be a Client already connected (used as is, left open).
    """
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    client = connect(scheduler, **local)
    owned = None if scheduler else client.cluster
    try:
        yield client
    finally:
        client.close()
        if owned is not None:
            owned.close()
