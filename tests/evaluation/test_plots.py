"""The PNG plots of a run: written, of the size asked, without choosing a matplotlib backend."""

import subprocess
import sys

import matplotlib.image
import pytest

from tff_orchestra.evaluation import plots

ROWS = [
    {
        'round': r,
        'client_work/train/cluster_loss': 2.0 - 0.1 * r,
        'client_work/train/degeneracy_loss': 1.4 - 0.05 * r,
        'client_work/global_clustering/loss': 0.5,
        'client_work/global_clustering/clusters_in_use': 4 + r,
        'aggregator/epsilon': 0.3 * r,
        'aggregator/epsilon_against_server': 0.9 * r,
    }
    for r in range(4)
]
TABLE = [
    {'method': 'orchestra', 'few_label_probe': 0.8, 'linear_probe': 0.9, 'knn': 0.85, 'nmi': 0.7},
    {'method': 'raw pixels', 'few_label_probe': 0.7, 'linear_probe': 0.88, 'knn': 0.9, 'nmi': 0.6},
]


@pytest.mark.parametrize(
    'draw, size',
    [
        (lambda path: plots.plot_losses(ROWS, path), (11, 4)),
        (lambda path: plots.plot_epsilon(ROWS, 'aggregator/epsilon', path), (6, 4)),
        (lambda path: plots.plot_evaluation(TABLE, path), (8, 4)),
    ],
    ids=['losses', 'epsilon', 'evaluation'],
)
def test_each_plot_is_a_png_of_its_size(draw, size, tmp_path):
  path = tmp_path / 'plot.png'
  draw(path)
  pixels = matplotlib.image.imread(path)
  assert pixels.shape[:2] == (size[1] * 110, size[0] * 110)  # inches x dpi 110
  assert pixels.std() > 0  # something is drawn


def test_losses_a_run_does_not_report_are_left_out(tmp_path):
  # Private centroids: no client loss sums and no global clustering loss, only clusters in use.
  rows = [{'round': r, 'client_work/global_clustering/clusters_in_use': 3 + r} for r in range(3)]
  plots.plot_losses(rows, tmp_path / 'plot.png')
  assert (tmp_path / 'plot.png').stat().st_size > 0
  # The other methods: one client loss, no global clusters.
  plots.plot_losses([{'round': r, 'client_work/train/loss': 1.0 / (r + 1)} for r in range(3)], tmp_path / 'other.png')
  assert (tmp_path / 'other.png').stat().st_size > 0


def test_importing_plots_leaves_the_matplotlib_backend_alone():
  script = 'import tff_orchestra.evaluation.plots, sys; print("matplotlib.pyplot" in sys.modules)'
  done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120, check=True)
  assert done.stdout.strip() == 'False'
