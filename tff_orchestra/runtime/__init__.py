"""Where computations run: TFF workers that do not outlive us, and the contexts that use them.

* `workers.py`: local `worker_binary` processes (`WorkerProcess`), which die
  with the program, and remote workers at `host:port`.
* `contexts.py`: `set_simulation_context()` / `simulation_context()`: TFF's
  sync context on one worker, or each computation's clients split across
  several; secure intrinsics compiled into plain sums for simulation.
* `addresses.py`: `host:port` lists, checked without TensorFlow.
* `_tff_internal.py`: the only module that imports TFF's private modules.

The names below are imported on first use (`_lazy.py`).
"""

from tff_orchestra import _lazy

_MODULES = {
    'ContextCannotRunSecureSumsError': 'contexts',
    'NotSplittableError': 'contexts',
    'WorkerProcess': 'workers',
    'WorkerStartError': 'workers',
    'WorkerUnavailableError': 'workers',
    'parse_worker_addresses': 'addresses',
    'running_workers': 'workers',
    'runs_secure_sums': 'contexts',
    'set_simulation_context': 'contexts',
    'shutdown': 'workers',
    'simulation_context': 'contexts',
    'worker_binary_path': 'workers',
}
__all__ = sorted(_MODULES)
__getattr__, __dir__ = _lazy.exports(__name__, _MODULES)
