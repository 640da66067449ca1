"""Checkpoints of the learner's state: this program's `.npz` against `tff.program.FileProgramStateManager`.

Builds the digits learner (small CNN, default `OrchestraConfig`, as `make run`),
takes its initial state, and for `--repeats` versions saves and loads it with

* `npz`: `training.checkpoints` (np.savez to a temporary file, fsync, rename);
* `FileProgramStateManager`: TFF's program-state manager (a SavedModel per
  version), given the state's flat list of arrays, because it cannot save the
  nested state itself (it raises; the error is reported).

For each: median save and load seconds, and whether the loaded arrays equal the
saved ones bit for bit (values and dtypes). Also reports what the manager does
when asked to save a version it holds, and to load a corrupt one: the two
cases a resume after a crash meets. Prints a table and writes JSON.

    python benchmarks/checkpoint_formats.py --json benchmarks/results/checkpoint_formats.json
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import statistics
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from report import watch_memory, write_report

from tff_orchestra import orchestra
from tff_orchestra import runtime
from tff_orchestra.training import checkpoints


def _same(saved, loaded) -> bool:
  return len(saved) == len(loaded) and all(
      np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype for a, b in zip(saved, loaded)
  )


def _error_of(call) -> str:
  try:
    call()
  except Exception as error:  # pylint: disable=broad-except  (what the manager raises is the finding)
    return f'{type(error).__name__}: {str(error).splitlines()[0][:120]}'
  return 'no error'


def measure(state, repeats: int, root: str) -> dict:
  leaves = [np.asarray(leaf) for leaf in tf.nest.flatten(state)]
  manager = tff.program.FileProgramStateManager(os.path.join(root, 'program_state'), keep_total=2, keep_first=False)
  seconds = {name: [] for name in ('npz save', 'npz load', 'manager save', 'manager load')}
  exact = {'npz': True, 'manager': True}
  for version in range(repeats):
    started = time.perf_counter()
    checkpoints.save_checkpoint(root, version, state)
    seconds['npz save'].append(time.perf_counter() - started)
    started = time.perf_counter()
    loaded = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(root)[1], state)
    seconds['npz load'].append(time.perf_counter() - started)
    exact['npz'] &= _same(leaves, [np.asarray(leaf) for leaf in tf.nest.flatten(loaded)])
    started = time.perf_counter()
    asyncio.run(manager.save(leaves, version))
    seconds['manager save'].append(time.perf_counter() - started)
    started = time.perf_counter()
    loaded = asyncio.run(manager.load(version, leaves))
    seconds['manager load'].append(time.perf_counter() - started)
    exact['manager'] &= _same(leaves, [np.asarray(leaf) for leaf in loaded])
  last = repeats - 1
  for path in glob.glob(os.path.join(root, 'program_state', f'program_state_{last}', '*.pb')):
    with open(path, 'wb') as file:
      file.write(b'not a protocol buffer')
  return {
      'state_arrays': len(leaves),
      'state_floats': int(sum(leaf.size for leaf in leaves)),
      'median_seconds': {name: statistics.median(values) for name, values in seconds.items()},
      'exact': exact,
      'manager_nested_state': _error_of(
          lambda: asyncio.run(tff.program.FileProgramStateManager(os.path.join(root, 'nested')).save(state, 0))
      ),
      'manager_existing_version': _error_of(lambda: asyncio.run(manager.save(leaves, last))),
      'manager_corrupt_version': _error_of(lambda: asyncio.run(manager.load(last, leaves))),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', default='benchmarks/results/checkpoint_formats.json')
  args = parser.parse_args()
  watch_memory()
  with runtime.simulation_context():
    state = orchestra.build_orchestra_process((8, 8, 1)).initialize()
  with tempfile.TemporaryDirectory() as root:
    results = measure(state, args.repeats, root)
  median = results['median_seconds']
  print(f"state: {results['state_arrays']} arrays, {results['state_floats']} floats")
  print(f"{'format':<26}{'save s':>8}{'load s':>8}  exact")
  for name, key in (('npz (training.checkpoints)', 'npz'), ('FileProgramStateManager', 'manager')):
    print(f"{name:<26}{median[key + ' save']:>8.3f}{median[key + ' load']:>8.3f}  {results['exact'][key]}")
  print(f"save/load time, manager over npz: {median['manager save'] / median['npz save']:.0f}x / "
        f"{median['manager load'] / median['npz load']:.0f}x")
  for key in ('manager_nested_state', 'manager_existing_version', 'manager_corrupt_version'):
    print(f'{key}: {results[key]}')
  write_report(args.json, vars(args), **results)


if __name__ == '__main__':
  main()
