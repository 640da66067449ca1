"""Orchestra round time against the number of clients and against model size, with peak memory.

Every client holds the same number of generated 8x8x1 images, so a round's
work grows with the clients only. Two sweeps, each setting in a fresh
simulation context (a fresh TFF worker):

* clients (`--clients`, default 5 to 100) with the small CNN at `--width`;
* model size: the small CNN at `--widths` with `--size-clients` clients.

For each: median round time over `--rounds` rounds after one warm-up round
(round 0 not counted), the least-squares line `seconds = intercept + slope * x`
with R^2 and every point's deviation from it, and the peak resident memory
(VmHWM) of this Python process and of the TFF worker during the setting.
Prints tables and writes JSON.

    python benchmarks/scaling.py --clients 5 10 20 50 100 --widths 16 32 64 128 256
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from typing import Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np
from report import peak_rss_mib, reset_peak_rss, watch_memory, write_report
from round_cost import add_orchestra_arguments, config_from, count_parameters, generated_datasets, time_tff_rounds

from tff_orchestra import orchestra
from tff_orchestra import runtime

IMAGE_SHAPE = (8, 8, 1)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
  """Least squares `y = intercept + slope * x`, R^2, and each point's relative deviation."""
  xs, ys = np.asarray(xs, float), np.asarray(ys, float)
  slope, intercept = np.polyfit(xs, ys, 1)
  predicted = intercept + slope * xs
  total = float(np.sum((ys - ys.mean()) ** 2))
  r_squared = 1.0 - float(np.sum((ys - predicted) ** 2)) / total if total > 0 else 1.0
  return dict(
      slope=float(slope), intercept=float(intercept), r_squared=r_squared,
      relative_deviation=((ys - predicted) / predicted).tolist(),
  )


def measure(width: int, clients: int, args: argparse.Namespace) -> dict:
  """Round time and peak memory of one setting, in a fresh context."""
  config = config_from(args, local_epochs=args.local_epochs, digits=True, max_clients_per_round=max(clients, 1))
  encoder = functools.partial(orchestra.small_cnn, width=width)
  datasets = generated_datasets(clients, args.examples, IMAGE_SHAPE, args.batch_size, args.seed)
  reset_peak_rss()
  with runtime.simulation_context():
    [worker] = runtime.running_workers()
    build = functools.partial(orchestra.build_orchestra_process, IMAGE_SHAPE, encoder=encoder, config=config)
    timing = time_tff_rounds(build, datasets, warmup=1, rounds=args.rounds)
    worker_peak = peak_rss_mib(str(worker.pid))
    parameters = count_parameters(timing.process.get_model_weights(timing.state))
  return dict(
      width=width, clients=clients, parameters=parameters,
      round_seconds=statistics.median(timing.round_seconds), round_times=timing.round_seconds,
      python_peak_rss_mib=peak_rss_mib(), worker_peak_rss_mib=worker_peak,
  )


def print_sweep(title: str, rows: list[dict], fit: dict, per: str, scale: float = 1.0) -> None:
  """The rows and the fit (slope shown per `scale` units of x, named `per`)."""
  print(f'\n{title}')
  print(f"{'clients':>8} {'width':>6} {'params':>11} {'round s':>9} {'vs fit':>8} {'python MiB':>11} {'worker MiB':>11}")
  for row, deviation in zip(rows, fit['relative_deviation']):
    print(f"{row['clients']:>8} {row['width']:>6} {row['parameters']:>11,} {row['round_seconds']:>9.3f} {deviation:>+8.1%} "
          f"{row['python_peak_rss_mib']:>11.0f} {row['worker_peak_rss_mib']:>11.0f}")
  print(f"fit: {fit['intercept']:.3f} s + {fit['slope'] * scale:.4g} s per {per}, R^2 {fit['r_squared']:.4f}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', type=int, nargs='+', default=[5, 10, 20, 50, 100])
  parser.add_argument('--width', type=int, default=32, help='small CNN width of the clients sweep')
  parser.add_argument('--widths', type=int, nargs='+', default=[16, 32, 64, 128, 256], help='small CNN widths of the model sweep')
  parser.add_argument('--size-clients', type=int, default=10, help='clients of the model-size sweep')
  parser.add_argument('--examples', type=int, default=64, help='generated images per client')
  parser.add_argument('--local-epochs', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=3)
  add_orchestra_arguments(parser)
  parser.add_argument('--json', default='benchmarks/results/scaling.json')
  args = parser.parse_args(argv)
  watch_memory()
  for name in ('clients', 'widths'):
    if len(set(getattr(args, name))) < 2:
      parser.error(f'--{name} needs at least two different values to fit a line')

  by_clients = [measure(args.width, clients, args) for clients in args.clients]
  clients_fit = linear_fit([r['clients'] for r in by_clients], [r['round_seconds'] for r in by_clients])
  print_sweep(f'round time against clients (small CNN width {args.width})', by_clients, clients_fit, 'client')
  by_size = [measure(width, args.size_clients, args) for width in args.widths]
  size_fit = linear_fit([r['parameters'] for r in by_size], [r['round_seconds'] for r in by_size])
  print_sweep(f'round time against model size ({args.size_clients} clients)', by_size, size_fit, 'million parameters', 1e6)
  write_report(
      args.json, vars(args),
      clients_sweep=dict(rows=by_clients, fit=clients_fit),
      model_size_sweep=dict(rows=by_size, fit=size_fit),
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
