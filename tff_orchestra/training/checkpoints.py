"""Checkpoints of a run: `checkpoints/round_XXXXX.npz`, written atomically, the last two kept.

A checkpoint holds the learning process state's leaves (`np.savez`); it is
written to a temporary file, fsynced and renamed, so a crash leaves either
the old or the new file. A checkpoint that cannot be read, or does not fit
the process state, is named and the previous one is used.

Why not `tff.program.FileProgramStateManager` (measured by
`benchmarks/checkpoint_formats.py` on the digits learner's state, 50 arrays,
0.9M floats): it cannot save the nested state (TypeError from
`tf.saved_model.save`: "this __dict__ descriptor does not support
'_DictWrapper' objects"); given the flat arrays it round-trips them exactly but
takes 38x the time to save and 27x to load (0.42 s / 0.29 s against 0.011 s);
it refuses to save a version it holds (`ProgramStateExistsError`), which a
resume past a lost checkpoint meets, and a corrupt version raises `OSError`, so
the fall-back to the previous checkpoint would be ours anyway.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tff_orchestra.training.config import ConfigError

CHECKPOINTS_KEPT = 2


def _checkpoint_path(output_dir: str, round_num: int) -> str:
  return os.path.join(output_dir, 'checkpoints', f'round_{round_num:05d}.npz')


def save_checkpoint(output_dir: str, round_num: int, state) -> None:
  """Writes `state` for `round_num` atomically; keeps the last two checkpoints."""
  path = _checkpoint_path(output_dir, round_num)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = path + '.partial'
  with open(temporary, 'wb') as file:
    np.savez(file, *[np.asarray(leaf) for leaf in tf.nest.flatten(state)])
    file.flush()
    os.fsync(file.fileno())
  os.replace(temporary, path)
  for old in sorted(glob.glob(os.path.join(output_dir, 'checkpoints', 'round_*.npz')))[:-CHECKPOINTS_KEPT]:
    os.remove(old)


def latest_checkpoint(output_dir: str) -> Optional[tuple[int, str]]:
  paths = sorted(glob.glob(os.path.join(output_dir, 'checkpoints', 'round_*.npz')))
  if not paths:
    return None
  return int(os.path.basename(paths[-1])[6:11]), paths[-1]


class CorruptCheckpointError(ValueError):
  """A checkpoint file that cannot be read, or does not fit the process state."""


def load_checkpoint(path: str, structure):
  """The state saved in `path`, packed as `structure`; `CorruptCheckpointError` names a bad file."""
  expected = tf.nest.flatten(structure)
  try:
    with np.load(path) as arrays:
      leaves = [arrays[f'arr_{i}'] for i in range(len(arrays.files))]
  except Exception as error:  # pylint: disable=broad-except  (zip, pickle and OS errors alike)
    raise CorruptCheckpointError(f'checkpoint {path} is unreadable: {type(error).__name__}: {error}') from error
  if len(leaves) != len(expected) or any(
      np.shape(leaf) != np.shape(want) or np.asarray(leaf).dtype != np.asarray(want).dtype
      for leaf, want in zip(leaves, expected)
  ):
    raise CorruptCheckpointError(f'checkpoint {path} does not hold a state of this run (arrays or shapes differ)')
  return tf.nest.pack_sequence_as(structure, leaves)


def restore_checkpoint(output_dir: str, structure, newest_round: int) -> tuple[int, Any]:
  """The newest readable checkpoint at or before `newest_round`: (round, state).

  A corrupt checkpoint is reported (on stderr, naming it) and the previous one
  is used; `ConfigError` if none is readable.
  """
  paths = sorted(glob.glob(os.path.join(output_dir, 'checkpoints', 'round_*.npz')), reverse=True)
  problems = []
  for path in paths:
    round_num = int(os.path.basename(path)[6:11])
    if round_num > newest_round:
      continue
    try:
      state = load_checkpoint(path, structure)
    except CorruptCheckpointError as error:
      problems.append(str(error))
      tqdm.write(f'warning: {error}; trying the previous checkpoint', file=sys.stderr)
      continue
    return round_num, state
  raise ConfigError(f'no readable checkpoint in {output_dir}: ' + '; '.join(problems or ['none found']))
