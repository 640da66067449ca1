"""Orchestra's representation quality against the baselines, over several seeds.

Trains with `tff-orchestra train`'s program on the same split per seed (digits,
10 clients, alpha 0.1 by default) and reports mean and spread of the
few-label probe, linear probe, kNN, NMI and ARI (k-means, k = classes, for
every method) and Orchestra's global-centroid NMI, for Orchestra, the same
encoder at random initialisation, and raw pixels. Prints a table and writes JSON.

    python benchmarks/orchestra_quality.py --seeds 0 1 2 --rounds 30 --json benchmarks/results/orchestra_quality.json

Any `tff-orchestra train` option applies to every seed (e.g. --aggregator).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from report import watch_memory, write_report

from tff_orchestra import settings, training

METRICS = ('few_label_probe', 'linear_probe', 'knn', 'nmi', 'ari', 'centroid_nmi')
PERCENT = ('few_label_probe', 'linear_probe', 'knn')
MUST_BEAT_ON = ('few_label_probe', 'nmi')


def summarise(tables: list[list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
  """{method: {metric: {mean, std, values}}} over the seeds' tables."""
  summary: dict[str, dict[str, dict[str, float]]] = {}
  for table in tables:
    for row in table:
      method = summary.setdefault(row['method'], {})
      for metric in METRICS:
        if row.get(metric) is not None:
          method.setdefault(metric, {'values': []})['values'].append(float(row[metric]))
  for method in summary.values():
    for stats in method.values():
      stats['mean'] = float(np.mean(stats['values']))
      stats['std'] = float(np.std(stats['values']))
  return summary


def format_summary(summary) -> str:
  header = f"{'method':<16}" + ''.join(f'{m:>22}' for m in METRICS)
  lines = [header, '-' * len(header)]
  for method, stats in summary.items():
    cells = []
    for metric in METRICS:
      if metric not in stats:
        cells.append(f'{"-":>22}')
        continue
      scale = 100.0 if metric in PERCENT else 1.0
      digits = 1 if metric in PERCENT else 3
      cells.append(f"{stats[metric]['mean'] * scale:>14.{digits}f} ± {stats[metric]['std'] * scale:<5.{digits}f}")
    lines.append(f'{method:<16}' + ''.join(cells))
  return '\n'.join(lines)


def verdicts(summary) -> dict[str, bool]:
  """Whether Orchestra's mean beats every baseline's mean, per required metric."""
  orchestra = summary['orchestra']
  return {
      metric: all(orchestra[metric]['mean'] > stats[metric]['mean'] for name, stats in summary.items() if name != 'orchestra')
      for metric in MUST_BEAT_ON
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  base = training.TrainConfig.build(output_dir='unused', progress=False)
  settings.add_arguments(parser, training.TrainConfig, exclude=('run.output_dir', 'run.seed'), base=base)
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--json', default='benchmarks/results/orchestra_quality.json')
  args = parser.parse_args(argv)
  watch_memory()
  try:
    config = settings.replace(base, settings.given_arguments(args))
  except settings.ConfigError as error:
    parser.error(str(error))

  tables, seconds = [], []
  with tempfile.TemporaryDirectory() as scratch:
    for seed in args.seeds:
      started = time.perf_counter()
      try:
        result = training.run(config.replace(seed=seed, output_dir=os.path.join(scratch, f'seed_{seed}')))
      except training.ConfigError as error:
        print(f'orchestra_quality: error: {error}', file=sys.stderr)
        return 2
      seconds.append(time.perf_counter() - started)
      tables.append(result['table'])
      print(f'seed {seed}: {seconds[-1]:.0f} s', flush=True)
  summary = summarise(tables)
  outcome = verdicts(summary)
  print(format_summary(summary))
  for metric, beats in outcome.items():
    print(f'orchestra beats both baselines on {metric}: {"yes" if beats else "NO"}')
  write_report(
      args.json,
      {'train': settings.to_mapping(config.replace(output_dir='(one per seed)')), 'seeds': args.seeds},
      seconds_per_seed=seconds,
      summary=summary,
      beats_both_baselines=outcome,
      tables=tables,
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
