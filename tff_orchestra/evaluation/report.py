"""One comparison row per method, and the table of rows as text, JSON and CSV.

`evaluate_features` scores one method's frozen features with every metric in
`metrics`; `format_table` and `write_table` put the rows of several methods
(Orchestra, raw pixels from `pixel_features`, a random encoder, ...) side by
side. NMI/ARI use k-means for every method, so methods compare; Orchestra's
row also scores the assignment to its global centroids.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from tff_orchestra.evaluation import metrics

# (row key, table header) in table order.
_ACCURACY_COLUMNS = (
    ('linear_probe', 'Linear probe'),
    ('few_label_probe', 'Few-label probe'),
    ('knn', 'kNN'),
)
_SCORE_COLUMNS = (('nmi', 'NMI'), ('ari', 'ARI'))
_ROW_KEYS = (
    'method',
    *(key for key, _ in _ACCURACY_COLUMNS + _SCORE_COLUMNS),
    'kmeans_clusters',
    'centroid_nmi',
    'centroid_ari',
    'centroid_clusters_used',
    'alignment',
    'uniformity',
)


def evaluate_features(
    name: str,
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    labels_per_class: int = 10,
    knn_k: int = 20,
    num_clusters: int | None = None,
    centroids: Any = None,
    test_projections: Any = None,
    view_projections: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
  """Scores one method's features with every metric; returns a table row.

  NMI/ARI come from the same protocol for every method, so methods compare:
  k-means with `num_clusters` (default: the number of test classes) on the
  test features. With `centroids` (Orchestra's global centroids) the row also
  scores the assignment of `test_projections` to them (`centroid_*`): the
  clustering Orchestra itself learned, usually with more clusters than
  classes, which caps its NMI below 1 even when every cluster is pure.

  Args:
    name: The method's name in the table.
    train_features: `[N, D]` float features of the labelled train split.
    train_labels: `[N]` int labels.
    test_features: `[M, D]` float features of the test split.
    test_labels: `[M]` int labels.
    labels_per_class: Labels per class of the few-label probe.
    knn_k: Neighbours of the kNN vote.
    num_clusters: k of k-means; default the number of test classes.
    centroids: `[K, P]` global centroids, with `test_projections`.
    test_projections: `[M, P]` projections of the test examples, the space
      the centroids live in.
    view_projections: `(z1, z2)`, L2-normalised projections `[M, P]` of two
      augmented views of held-out images: scored as Wang & Isola's alignment
      and uniformity (the reference's unsupervised model selection).
    seed: Seeds the few-label draw, the probes and k-means.

  Returns:
    `{'method', 'linear_probe', 'few_label_probe', 'knn'` (accuracies in
    [0, 1]), `'nmi', 'ari', 'kmeans_clusters', 'centroid_nmi',
    'centroid_ari', 'centroid_clusters_used'}` (None without centroids),
    `'alignment', 'uniformity'` (None without view projections).
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f'name must be a non-empty str, got {name!r}')
  if (centroids is None) != (test_projections is None):
    raise ValueError(
        'centroids and test_projections must be given together (NMI/ARI assign '
        'the projections to the centroids), got only '
        + ('centroids' if test_projections is None else 'test_projections')
    )
  if num_clusters is None:
    num_clusters = int(np.unique(np.asarray(test_labels)).size)
  kmeans = metrics.kmeans_cluster_scores(test_features, test_labels, num_clusters, seed)
  row = {
      'method': name,
      'linear_probe': metrics.linear_probe(
          train_features, train_labels, test_features, test_labels, seed=seed
      ),
      'few_label_probe': metrics.few_label_probe(
          train_features,
          train_labels,
          test_features,
          test_labels,
          labels_per_class=labels_per_class,
          seed=seed,
      ),
      'knn': metrics.knn_accuracy(
          train_features, train_labels, test_features, test_labels, k=knn_k
      ),
      'nmi': kmeans['nmi'],
      'ari': kmeans['ari'],
      'kmeans_clusters': num_clusters,
      'centroid_nmi': None,
      'centroid_ari': None,
      'centroid_clusters_used': None,
      'alignment': None,
      'uniformity': None,
  }
  if view_projections is not None:
    first, second = view_projections
    row.update(alignment=metrics.alignment(first, second), uniformity=metrics.uniformity(first))
  if centroids is not None:
    scores = metrics.cluster_assignment_scores(test_projections, centroids, test_labels)
    row.update(
        centroid_nmi=scores['nmi'],
        centroid_ari=scores['ari'],
        centroid_clusters_used=scores['clusters_used'],
    )
  return row


def _check_rows(rows: Any) -> None:
  """Raises unless `rows` is a non-empty list of rows like `evaluate_features`'."""
  if not isinstance(rows, Sequence) or isinstance(rows, str) or not rows:
    raise TypeError(f'rows must be a non-empty list of dicts, got {rows!r}')
  for index, row in enumerate(rows):
    if not isinstance(row, dict):
      raise TypeError(f'rows[{index}] must be a dict, got {type(row).__name__}')
    missing = [key for key in _ROW_KEYS if key not in row]
    if missing:
      raise ValueError(f'rows[{index}] is missing {missing} (expected keys {list(_ROW_KEYS)})')
    for key, _ in _ACCURACY_COLUMNS + _SCORE_COLUMNS:
      value = row[key]
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"rows[{index}]['{key}'] must be a number, got {value!r}")


def _centroid_cell(row: dict[str, Any]) -> str:
  if row['centroid_nmi'] is None:
    return '-'
  return f"{row['centroid_nmi']:.3f} / {row['centroid_ari']:.3f} ({row['centroid_clusters_used']} clusters)"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """Fixed-width text table of `evaluate_features` rows, one line per method.

  Accuracies are percentages with one decimal, NMI/ARI have three decimals;
  NMI/ARI are k-means' (same for every method); the last column is the
  assignment to Orchestra's global centroids, where there are some.
  """
  _check_rows(rows)
  kmeans = sorted({row['kmeans_clusters'] for row in rows})
  header = [
      'Method',
      *(title for _, title in _ACCURACY_COLUMNS),
      *(f'{title} (k-means, k={",".join(map(str, kmeans))})' for _, title in _SCORE_COLUMNS),
      'Alignment',
      'Uniformity',
      'Global centroids NMI / ARI',
  ]
  lines = [
      [
          str(row['method']),
          *(f'{100.0 * row[key]:.1f}' for key, _ in _ACCURACY_COLUMNS),
          *(f'{row[key]:.3f}' for key, _ in _SCORE_COLUMNS),
          *('-' if row[key] is None else f'{row[key]:.3f}' for key in ('alignment', 'uniformity')),
          _centroid_cell(row),
      ]
      for row in rows
  ]
  widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]

  def render(cells: list[str]) -> str:
    # Names left-aligned, numbers right-aligned under their headers.
    first, *middle, last = cells
    return '  '.join(
        [first.ljust(widths[0])]
        + [cell.rjust(width) for cell, width in zip(middle, widths[1:-1])]
        + [last.ljust(widths[-1])]
    ).rstrip()

  separator = '  '.join('-' * width for width in widths)
  return '\n'.join([render(header), separator, *(render(cells) for cells in lines)])


def _json_value(value: Any) -> Any:
  """numpy scalars as Python numbers, for `json.dump`."""
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f'a row value must be JSON-serialisable, got {value!r} ({type(value).__name__})')


def write_table(
    rows: Sequence[dict[str, Any]], path_without_suffix: str | os.PathLike[str]
) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes the rows to `<path>.json` (a list of objects) and `<path>.csv`.

  Parent directories are created. The CSV columns are the row keys in order
  of first appearance.

  Returns:
    The paths of the JSON and the CSV file.
  """
  _check_rows(rows)
  if not isinstance(path_without_suffix, (str, os.PathLike)):
    raise TypeError(f'path_without_suffix must be a str or path, got {path_without_suffix!r}')
  base = pathlib.Path(path_without_suffix)
  if base.suffix.lower() in ('.json', '.csv'):
    raise ValueError(
        f'path_without_suffix must not end in .json or .csv (both are added), got {str(base)!r}'
    )
  base.parent.mkdir(parents=True, exist_ok=True)
  json_path = base.with_name(base.name + '.json')
  csv_path = base.with_name(base.name + '.csv')
  with json_path.open('w', encoding='utf-8') as f:
    json.dump(list(rows), f, indent=2, default=_json_value)
    f.write('\n')
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with csv_path.open('w', encoding='utf-8', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  return json_path, csv_path


def pixel_features(images: Any) -> np.ndarray:
  """Images `[N, H, W, C]` (or `[N, H, W]`) flattened to float32 `[N, H*W*C]`.

  The raw-pixels baseline: the same metrics on the inputs themselves show how
  much a learned representation adds. Values are not rescaled; the probes
  standardise and kNN and k-means normalise rows, so scale does not matter.
  """
  array = np.asarray(images)
  if array.dtype.kind not in 'iuf':
    raise TypeError(f'images must be an array of numbers, got dtype {array.dtype}')
  if array.ndim < 2 or array.shape[0] < 1 or array[0].size < 1:
    raise ValueError(
        f'images must have a leading example axis and pixels, e.g. [N, H, W, C], got shape {array.shape}'
    )
  return array.reshape(array.shape[0], -1).astype(np.float32)
