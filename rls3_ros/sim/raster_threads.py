"""How many raster threads Mesa's software renderer (llvmpipe) gives each simulator process.

llvmpipe starts one raster thread per core in every process that renders. One process then has
the cores to itself; several simulators on the same cores (one ``sim_bridge`` per core) each run
as many raster threads as there are cores, and a render's threads wait on each other whenever
one of them lost its core to another process. Measured with ``rls3_ros.bench.generation`` on 2
cores, three alternating pairs: 2 bridges gave 164-166 samples/s with one raster thread each
against 154-159 with llvmpipe's two (1.55-1.60 against 1.42-1.55 x one bridge); one bridge the
same with either (103-106 against 103-109).
"""

from __future__ import annotations

import os
from typing import Optional

ENV = "LP_NUM_THREADS"  # Mesa's llvmpipe: raster threads (0 = render in the calling thread)


def shared_raster_threads(processes: int, cpus: Optional[int] = None) -> int:
    """Raster threads for each of ``processes`` rendering processes on ``cpus`` cores (default: this
    machine's): 0 = llvmpipe's own choice (a thread per core) for one process, else the cores shared
    out among the processes, at least 1 each."""
    cpus = int(cpus or os.cpu_count() or 1)
    if processes <= 1:
        return 0
    return max(1, cpus // int(processes))


def set_raster_threads(n: int) -> Optional[str]:
    """Give this process ``n`` llvmpipe raster threads (``n`` <= 0: leave Mesa's choice, or an inherited
    ``LP_NUM_THREADS``; ``n`` > 0 overrides one). Takes effect only before the process's first GL
    context (Mesa reads it when its driver starts). Returns the value set, or None."""
    if int(n) <= 0:
        return None
    os.environ[ENV] = str(int(n))
    return os.environ[ENV]
