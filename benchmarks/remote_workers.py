"""Orchestra round time on one TFF worker against the clients split across two.

The digits learner (small CNN, `MeanFactory`) with `--clients` clients per
round, in three settings, each in a fresh context:

* `local`: the worker `runtime.simulation_context()` starts and owns;
* `1 remote`: one worker_binary started apart and reached by address
  (`simulation_context(workers=[address])`);
* `2 remote`: two such workers; every round's clients are split between them
  (TFF's mergeable form: each runs its half up to the aggregation, the partial
  aggregates are merged, one worker runs the server part).

For each: median round time over `--rounds` rounds after `--warmup` (round 0
and the build reported apart), and the CPU seconds each worker and this Python
process used per timed round (from /proc), which shows how the work divides.
All workers share this machine's cores, so two workers here measure the cost
of splitting, not the speed-up of two hosts. `--one-core-per-worker` pins
remote worker i (all its threads) to core i: `1 remote` then has one core and
`2 remote` two, as two one-core hosts would; give such workers
`--max-concurrent-computation-calls 1` (on one core, TFF's default of running
every client at once stalled: 10x slower, see docs/guide/remote-workers.md). Prints a
table and writes JSON.

    python benchmarks/remote_workers.py --clients 20
    python benchmarks/remote_workers.py --clients 20 --settings "1 remote" "2 remote" --one-core-per-worker \
        --max-concurrent-computation-calls 1 --json benchmarks/results/remote_workers_one_core_each.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
from report import watch_memory, write_report
from round_cost import add_orchestra_arguments, config_from, digits_datasets

from tff_orchestra import orchestra
from tff_orchestra import runtime

SETTINGS = ('local', '1 remote', '2 remote')


def cpu_seconds(pid: int) -> float:
  """User + system CPU time of a process and all its threads (Linux /proc)."""
  with open(f'/proc/{pid}/stat') as stat:
    fields = stat.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def pin_to_core(pid: int, core: int) -> None:
  """Every thread of a process onto one core (threads it starts later inherit it)."""
  for thread in os.listdir(f'/proc/{pid}/task'):
    os.sched_setaffinity(int(thread), {core})


def measure(setting: str, datasets, config: orchestra.OrchestraConfig, args: argparse.Namespace) -> dict:
  """Times one setting; its workers are stopped before it returns."""
  calls = args.max_concurrent_computation_calls
  remote = [runtime.WorkerProcess(calls) for _ in range(int(setting[0]))] if setting != 'local' else []
  try:
    if args.one_core_per_worker:
      for core, worker in enumerate(remote):
        pin_to_core(worker.pid, core % os.cpu_count())
    where = dict(workers=[w.address for w in remote]) if remote else dict(max_concurrent_computation_calls=calls)
    with runtime.simulation_context(**where):
      workers = remote or runtime.running_workers()[-1:]
      started = time.perf_counter()
      process = orchestra.build_orchestra_process((8, 8, 1), config=config)
      state = process.initialize()
      build_seconds = time.perf_counter() - started
      started = time.perf_counter()
      state = process.next(state, datasets).state
      round0_seconds = time.perf_counter() - started
      for _ in range(args.warmup):
        state = process.next(state, datasets).state
      cpu_before = [cpu_seconds(w.pid) for w in workers]
      python_before = time.process_time()
      round_times = []
      for _ in range(args.rounds):
        started = time.perf_counter()
        state = process.next(state, datasets).state
        round_times.append(time.perf_counter() - started)
      worker_cpu = [(cpu_seconds(w.pid) - before) / args.rounds for w, before in zip(workers, cpu_before)]
      python_cpu = (time.process_time() - python_before) / args.rounds
  finally:
    for worker in remote:
      worker.stop()
  return dict(
      setting=setting, workers=len(workers), clients=len(datasets), one_core_per_worker=args.one_core_per_worker,
      max_concurrent_computation_calls=calls,
      round_seconds=statistics.median(round_times), round_times=round_times,
      build_seconds=build_seconds, round0_seconds=round0_seconds,
      worker_cpu_seconds_per_round=worker_cpu, python_cpu_seconds_per_round=python_cpu,
  )


def format_row(row: dict, baseline: float) -> str:
  cpu = ' + '.join(f'{c:5.2f}' for c in row['worker_cpu_seconds_per_round'])
  return (
      f"{row['setting']:<9} {row['round_seconds']:7.2f} s  x{row['round_seconds'] / baseline:4.2f} | "
      f"worker CPU {cpu} s/round  python CPU {row['python_cpu_seconds_per_round']:5.2f} s/round | "
      f"build {row['build_seconds']:5.1f} s  round 0 {row['round0_seconds']:5.1f} s"
  )


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', type=int, default=20)
  parser.add_argument('--alpha', type=float, default=0.1)
  parser.add_argument('--local-epochs', type=int, default=orchestra.OrchestraConfig.local_epochs)
  parser.add_argument('--settings', nargs='+', choices=SETTINGS, default=list(SETTINGS))
  parser.add_argument('--one-core-per-worker', action='store_true', help='pin remote worker i to core i')
  parser.add_argument(
      '--max-concurrent-computation-calls', type=int, default=-1,
      help="the workers' flag: clients run at once (-1: all; use 1 with --one-core-per-worker)",
  )
  add_orchestra_arguments(parser)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--json', default='benchmarks/results/remote_workers.json')
  args = parser.parse_args(argv)
  watch_memory()
  if args.one_core_per_worker and 'local' in args.settings:
    parser.error('--one-core-per-worker pins remote workers only: leave "local" out of --settings')

  datasets = digits_datasets(args.clients, args.alpha, args.batch_size, args.seed)
  config = config_from(args, local_epochs=args.local_epochs, digits=True, max_clients_per_round=args.clients)
  rows = []
  for setting in args.settings:
    rows.append(measure(setting, datasets, config, args))
    print(format_row(rows[-1], rows[0]['round_seconds']), flush=True)
  write_report(args.json, vars(args), results=rows)
  return 0


if __name__ == '__main__':
  sys.exit(main())
