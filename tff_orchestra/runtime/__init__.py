"""Where computations run: TFF workers that do not outlive us, and the contexts that use them.

* `workers.py`: local `worker_binary` processes (`WorkerProcess`), which die
  with the program, and remote workers at `host:port`.
* `contexts.py`: `set_simulation_context()` / `simulation_context()`: TFF's
  sync context on one worker, or each computation's clients split across
  several; secure intrinsics compiled into plain sums for simulation.
* `_tff_internal.py`: the only module that imports TFF's private modules.
"""

from tff_orchestra.runtime.contexts import NotSplittableError
from tff_orchestra.runtime.contexts import set_simulation_context
from tff_orchestra.runtime.contexts import simulation_context
from tff_orchestra.runtime.workers import WorkerProcess
from tff_orchestra.runtime.workers import WorkerStartError
from tff_orchestra.runtime.workers import WorkerUnavailableError
from tff_orchestra.runtime.workers import parse_worker_addresses
from tff_orchestra.runtime.workers import running_workers
from tff_orchestra.runtime.workers import shutdown
from tff_orchestra.runtime.workers import worker_binary_path

__all__ = [
    'NotSplittableError',
    'WorkerProcess',
    'WorkerStartError',
    'WorkerUnavailableError',
    'parse_worker_addresses',
    'running_workers',
    'set_simulation_context',
    'shutdown',
    'simulation_context',
    'worker_binary_path',
]
