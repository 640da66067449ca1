"""Peak memory of an Orchestra ResNet-18 round against the number of clients: the ceiling for 100 clients.

Each setting runs in a fresh simulation context (a fresh TFF worker): round 0,
`--warmup` rounds and `--rounds` timed rounds of the learner with `MeanFactory`
on generated 32x32x3 images, 1 local epoch. Two ways to run the clients:

* `sequential` (`max_concurrent_computation_calls=1`): one client's training at
  a time; the worker still holds every client's update until the sum;
* `concurrent` (TFF's default): every client's graph, data and training at once.

For each: the peak resident memory (VmHWM) of this process and of the worker,
the round time, and per mode the least-squares line of the worker's peak
against clients, from which docs/benchmarks/speed.md states the ceiling for 100 clients
(measured directly where `--sequential-clients` includes 100). Prints a table
and writes JSON.

    python benchmarks/memory_ceiling.py --sequential-clients 4 16 100 --concurrent-clients 2 4
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
from report import watch_memory, write_report
from round_cost import add_orchestra_arguments, config_from, count_parameters, generated_datasets, time_tff_rounds
from scaling import linear_fit

from tff_orchestra import orchestra
from tff_orchestra import runtime

IMAGE_SHAPE = (32, 32, 3)
MODES = {'sequential': 1, 'concurrent': None}


def measure(mode: str, clients: int, args: argparse.Namespace) -> dict:
  """Round time and peak memory of `clients` clients run as `mode` says, in a fresh worker."""
  config = config_from(args, local_epochs=1, digits=False, max_clients_per_round=clients)
  datasets = generated_datasets(clients, args.examples, IMAGE_SHAPE, args.batch_size, args.seed)
  build = functools.partial(orchestra.build_orchestra_process, IMAGE_SHAPE, encoder=args.encoder, config=config)
  memory = watch_memory()
  memory.reset()
  concurrency = MODES[mode]
  context = runtime.simulation_context(**({} if concurrency is None else dict(max_concurrent_computation_calls=concurrency)))
  with context:
    timing = time_tff_rounds(build, datasets, warmup=args.warmup, rounds=args.rounds)
    peaks = memory.peaks()
    parameters = count_parameters(timing.process.get_model_weights(timing.state))
  row = dict(mode=mode, clients=clients, parameters=parameters, round_seconds=statistics.median(timing.round_seconds),
             round_times=timing.round_seconds, **peaks)
  print(f"{mode:<11} {clients:>4} clients  round {row['round_seconds']:7.1f} s  "
        f"python {row['python_peak_rss_mib']:7.0f} MiB  worker {row['worker_peak_rss_mib']:7.0f} MiB", flush=True)
  return row


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sequential-clients', type=int, nargs='+', default=[4, 16, 100])
  parser.add_argument('--concurrent-clients', type=int, nargs='*', default=[2, 4], help='none: skip this mode')
  parser.add_argument('--examples', type=int, default=64, help='generated images per client')
  parser.add_argument('--encoder', choices=('resnet18', 'small_cnn'), default='resnet18')
  parser.add_argument('--warmup', type=int, default=0)
  parser.add_argument('--rounds', type=int, default=1)
  add_orchestra_arguments(parser)
  parser.add_argument('--json', default='benchmarks/results/memory_ceiling.json')
  args = parser.parse_args(argv)
  watch_memory()
  sweeps = {}
  for mode, counts in (('sequential', args.sequential_clients), ('concurrent', args.concurrent_clients)):
    rows = [measure(mode, clients, args) for clients in counts]
    fit = linear_fit([r['clients'] for r in rows], [r['worker_peak_rss_mib'] for r in rows]) if len(set(counts)) > 1 else None
    if fit:
      print(f"{mode}: worker peak {fit['intercept']:.0f} MiB + {fit['slope']:.0f} MiB per client "
            f"(R^2 {fit['r_squared']:.3f}); 100 clients: {fit['intercept'] + 100 * fit['slope']:.0f} MiB", flush=True)
    sweeps[mode] = dict(rows=rows, worker_peak_fit=fit)
  write_report(args.json, vars(args), **sweeps)
  return 0


if __name__ == '__main__':
  sys.exit(main())
