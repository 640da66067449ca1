"""PNG plots of a training run: losses per round, epsilon per round, evaluation."""

from __future__ import annotations

import os
from typing import Sequence

from matplotlib.figure import Figure  # Files only: no pyplot, so no backend is chosen for the process.

LOSS_SERIES = (
    ('client_work/train/loss', 'loss (clients)'),
    ('client_work/train/cluster_loss', 'cluster loss (clients)'),
    ('client_work/train/degeneracy_loss', 'degeneracy loss (clients)'),
    ('client_work/global_clustering/loss', 'global clustering loss (server)'),
)


def plot_losses(rows: Sequence[dict], path: str | os.PathLike) -> None:
  """Losses (those the run reports) and global clusters in use per round (round 0 trains nothing)."""
  rounds = [row['round'] for row in rows if row['round'] > 0]
  figure = Figure(figsize=(11, 4))
  losses, usage = figure.subplots(1, 2)
  for key, label in LOSS_SERIES:
    if key in rows[-1]:  # private centroids: no client loss sums, no global clustering loss
      losses.plot(rounds, [row[key] for row in rows if row['round'] > 0], marker='.', label=label)
  losses.set_xlabel('round')
  losses.set_title('losses')
  if losses.lines:
    losses.legend()
  in_use = 'client_work/global_clustering/clusters_in_use'
  if in_use in rows[-1]:  # Orchestra's; the other methods have no global clusters
    usage.plot([row['round'] for row in rows], [row[in_use] for row in rows], marker='.')
  usage.set_xlabel('round')
  usage.set_title('global clusters in use' if in_use in rows[-1] else 'no global clusters (not Orchestra)')
  figure.tight_layout()
  figure.savefig(path, dpi=110)


def plot_epsilon(rows: Sequence[dict], epsilon_key: str, path: str | os.PathLike) -> None:
  """Epsilon per round, amplified by sampling and (if reported) against the server: the model update's only."""
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  rounds = [row['round'] for row in rows]
  axes.plot(rounds, [row[epsilon_key] for row in rows], marker='.', label='amplified by sampling')
  if epsilon_key + '_against_server' in rows[-1]:
    axes.plot(rounds, [row[epsilon_key + '_against_server'] for row in rows], marker='.', label='against the server')
    axes.legend()
  axes.set_xlabel('round')
  axes.set_ylabel('epsilon')
  axes.set_title(f'privacy spent on the model update ({epsilon_key});\nother channels: privacy_report.json', fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=110)


def plot_evaluation(table: Sequence[dict], path: str | os.PathLike) -> None:
  """Grouped bars: each metric, each method."""
  metrics = (('few_label_probe', 'few-label probe'), ('linear_probe', 'linear probe'), ('knn', 'kNN'), ('nmi', 'NMI'))
  figure = Figure(figsize=(8, 4))
  axes = figure.subplots()
  width = 0.8 / len(table)
  for index, row in enumerate(table):
    positions = [m + index * width for m in range(len(metrics))]
    axes.bar(positions, [row[key] for key, _ in metrics], width, label=row['method'])
  axes.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))])
  axes.set_xticklabels([label for _, label in metrics])
  axes.set_ylim(0, 1.15)
  axes.legend(loc='upper center', ncol=len(table), frameon=False)
  axes.set_title('Orchestra against baselines (test split)')
  figure.tight_layout()
  figure.savefig(path, dpi=110)
