"""A run's metrics: one flat row per round, in metrics.json and metrics.csv and for
TensorBoard, and the progress bar's text.

TensorBoard gets every number of a row as a scalar under its '/'-joined name, at
step = round, through `tf.summary` (what Keras and TFF users open). A resumed
run writes again from the round after its checkpoint; TensorBoard drops the
orphaned later steps of the interrupted run (its default `--purge_orphaned_data`).
TFF's `tff.program.TensorBoardReleaseManager` writes the same `tf.summary`
scalars, but its `release` is a coroutine: driving it with `asyncio.run` fails
inside a running event loop, such as a notebook's, where `training.run` is
also called; so the writer is used directly.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf


def flatten_metrics(metrics, prefix: str = '') -> dict[str, Any]:
  """Nested metrics as `{'a/b/c': number}`."""
  if hasattr(metrics, 'items'):
    flat = {}
    for key, value in metrics.items():
      flat.update(flatten_metrics(value, f'{prefix}{key}/'))
    return flat
  if isinstance(metrics, (list, tuple)) and not metrics:
    return {}
  value = np.asarray(metrics)
  return {prefix[:-1]: value.item() if value.size == 1 else value.tolist()}


def write_json(path: str, value) -> None:
  temporary = path + '.partial'
  with open(temporary, 'w') as file:
    json.dump(value, file, indent=1, default=float)
  os.replace(temporary, path)


def write_metrics(output_dir: str, rows: list[dict]) -> None:
  """metrics.json and metrics.csv, rewritten whole (a few hundred rows at most)."""
  write_json(os.path.join(output_dir, 'metrics.json'), rows)
  columns = list(dict.fromkeys(key for row in rows for key in row))
  temporary = os.path.join(output_dir, 'metrics.csv.partial')
  with open(temporary, 'w', newline='') as file:
    writer = csv.DictWriter(file, columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(temporary, os.path.join(output_dir, 'metrics.csv'))


def progress_postfix(row: dict) -> dict[str, str]:
  """The losses, clusters in use and epsilon of a row, as the progress bar shows them."""
  shown = {
      'loss': row.get('client_work/train/loss'),  # the baselines' one loss
      'cluster': row.get('client_work/train/cluster_loss'),
      'deg': row.get('client_work/train/degeneracy_loss'),
      'in use': row.get('client_work/global_clustering/clusters_in_use'),
  }
  epsilon = [v for k, v in row.items() if k.endswith('/epsilon')]
  if epsilon:
    shown['eps'] = epsilon[0]
  return {k: f'{v:.3g}' if isinstance(v, float) else str(v) for k, v in shown.items() if v is not None}


class TensorBoardWriter:
  """Writes each row's numbers as scalars to `<output_dir>/tensorboard` (step = round)."""

  def __init__(self, output_dir: str):
    self._writer = tf.summary.create_file_writer(os.path.join(output_dir, 'tensorboard'))

  def write(self, row: dict) -> None:
    with self._writer.as_default(step=int(row['round'])):
      for name, value in row.items():
        if name != 'round' and isinstance(value, (int, float)) and not isinstance(value, bool):
          tf.summary.scalar(name, value)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
