"""numba made ready once in the scorer's fork server, not in every worker it forks.

serving.scoring.runner's fork server imports this module (WORKER_IMPORTS). numba's first dispatch
in a process builds its compiler's registries, about 1 s of CPU even when the kernel comes from
numba's cache; done here, each forked worker starts with them, and with the id hashing kernel
loaded. Nothing here starts a thread (no OpenMP, no Arrow pool): the fork server must stay safe
to fork.
"""

from features.ingest.id_hashes import compile_kernels

compile_kernels()
