"""Orchestra against the paper's federated baselines (SimCLR, BYOL, SimSiam, SpecLoss, rotation), same runs.

Every method trains with `tff-orchestra train`'s program on the same split,
clients, rounds, local epochs and aggregator (digits, 10 clients by default),
for each Dirichlet alpha and seed; each is scored on the test split (linear
and few-label probes, kNN, NMI of k-means, alignment and uniformity of two
views of the held-out images) and timed per round. Prints a table of mean ±
std per (alpha, method) with each method's rank, writes JSON (resumable: runs
already in it are kept) and a plot.

    python benchmarks/methods.py --rounds 15 --no-flip --min-crop-area 0.6
    # CIFAR-10 as the paper (needs the archive and, in practice, a GPU):
    python benchmarks/methods.py --dataset cifar10 --data-dir DIR --encoder resnet18 --clients 100 \
        --clients-per-round 50 --alphas 0.1 --rounds 100 --json benchmarks/results/methods_cifar10.json

Any `tff-orchestra train` option applies to every run (e.g. --aggregator).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from report import watch_memory, write_report

from tff_orchestra import settings, training

METHODS = ('orchestra', 'simclr', 'byol', 'simsiam', 'specloss', 'rotation')
METRICS = ('few_label_probe', 'linear_probe', 'knn', 'nmi', 'alignment', 'uniformity', 'seconds_per_round')
PERCENT = ('few_label_probe', 'linear_probe', 'knn')
LOWER_IS_BETTER = ('alignment', 'uniformity', 'seconds_per_round')


def run_key(method: str, alpha: float, seed: int) -> str:
  return f'{method}|alpha={alpha:g}|seed={seed}'


def one_run(config, method: str, alpha: float, seed: int, scratch: str) -> dict:
  """Trains and evaluates one method; returns its table row with its seconds per training round."""
  run_config = settings.replace(config, {'model.method': method, 'data.alpha': alpha, 'run.seed': seed,
                                         'run.output_dir': os.path.join(scratch, run_key(method, alpha, seed))})
  started = time.perf_counter()
  result = training.run(run_config)
  trained = [row['seconds'] for row in result['rows'] if row['round'] > 0]
  row = dict(result['table'][0], seconds_per_round=float(np.mean(trained)), seconds=time.perf_counter() - started)
  row['baselines'] = result['table'][1:]
  return row


def summarise(runs: dict[str, dict], methods, alphas) -> dict[str, dict[str, dict[str, dict]]]:
  """{alpha: {method: {metric: {mean, std, values}}}} over the seeds."""
  summary = {}
  for alpha in alphas:
    by_method = summary.setdefault(f'{alpha:g}', {})
    for method in methods:
      rows = [row for key, row in runs.items() if key.startswith(f'{method}|alpha={alpha:g}|')]
      if not rows:
        continue
      by_method[method] = {
          metric: {'values': values, 'mean': float(np.mean(values)), 'std': float(np.std(values))}
          for metric in METRICS
          if (values := [float(row[metric]) for row in rows if row.get(metric) is not None])
      }
  return summary


def ranks(by_method: dict) -> dict[str, dict[str, int]]:
  """{metric: {method: rank}} by mean (1 is best; lower is better for alignment, uniformity and time)."""
  ranked = {}
  for metric in METRICS:
    present = [m for m in by_method if metric in by_method[m]]
    order = sorted(present, key=lambda m: by_method[m][metric]['mean'], reverse=metric not in LOWER_IS_BETTER)
    ranked[metric] = {method: position + 1 for position, method in enumerate(order)}
  return ranked


def cell(stats: dict, metric: str, rank: int) -> str:
  """'mean ± std (rank)', accuracies in %."""
  scale, digits = (100.0, 1) if metric in PERCENT else (1.0, 3 if metric != 'seconds_per_round' else 1)
  return f"{stats[metric]['mean'] * scale:.{digits}f} ± {stats[metric]['std'] * scale:.{digits}f} ({rank})"


def format_summary(summary) -> str:
  lines = []
  for alpha, by_method in summary.items():
    header = f"alpha {alpha:<10}" + ''.join(f'{m:>22}' for m in METRICS)
    lines += [header, '-' * len(header)]
    ranked = ranks(by_method)
    for method, stats in by_method.items():
      lines.append(f'{method:<16}' + ''.join(f'{cell(stats, metric, ranked[metric][method]):>22}' for metric in METRICS))
    lines.append('')
  return '\n'.join(lines)


def markdown_table(summary) -> str:
  """The table of docs/benchmarks/quality.md: one row per (alpha, method), mean ± std over seeds, the rank in brackets."""
  titles = {'few_label_probe': 'few-label probe', 'linear_probe': 'linear probe', 'knn': 'kNN', 'nmi': 'NMI',
            'alignment': 'alignment', 'uniformity': 'uniformity', 'seconds_per_round': 's / round'}
  lines = ['| alpha | method | ' + ' | '.join(titles[m] for m in METRICS) + ' |', '|---' * (len(METRICS) + 2) + '|']
  for alpha, by_method in summary.items():
    ranked = ranks(by_method)
    for method, stats in by_method.items():
      cells = [cell(stats, metric, ranked[metric][method]) for metric in METRICS]
      cells = [f'**{text}**' if ranked[metric][method] == 1 else text for metric, text in zip(METRICS, cells)]
      lines.append(f'| {alpha} | {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(summary, path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  shown = ('few_label_probe', 'nmi', 'alignment', 'uniformity')
  figure = Figure(figsize=(4 * len(shown), 3.6))
  axes = figure.subplots(1, len(shown))
  alphas = list(summary)
  for axis, metric in zip(axes, shown):
    methods = [m for m in METHODS if any(m in summary[a] for a in alphas)]
    width = 0.8 / max(len(alphas), 1)
    for i, alpha in enumerate(alphas):
      means = [summary[alpha].get(m, {}).get(metric, {}).get('mean', np.nan) for m in methods]
      stds = [summary[alpha].get(m, {}).get(metric, {}).get('std', 0.0) for m in methods]
      scale = 100.0 if metric in PERCENT else 1.0
      axis.bar(np.arange(len(methods)) + i * width, np.array(means) * scale, width, yerr=np.array(stds) * scale,
               label=f'alpha {alpha}')
    axis.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=45, ha='right')
    axis.set_title(metric.replace('_', ' ') + (' (lower is better)' if metric in LOWER_IS_BETTER else ''))
  axes[0].legend()
  figure.tight_layout()
  figure.savefig(path, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  base = training.TrainConfig.build(output_dir='unused', progress=False)
  settings.add_arguments(parser, training.TrainConfig,
                         exclude=('run.output_dir', 'run.seed', 'data.alpha', 'model.method'), base=base)
  parser.add_argument('--methods', nargs='+', default=list(METHODS))
  parser.add_argument('--alphas', type=float, nargs='+', default=[0.1, 1.0])
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--json', default='benchmarks/results/methods.json')
  parser.add_argument('--plot', default=None, help='default: the JSON path with .png')
  args = parser.parse_args(argv)
  watch_memory()
  try:
    config = settings.replace(base, settings.given_arguments(args))
  except settings.ConfigError as error:
    parser.error(str(error))
  runs = {}
  if os.path.exists(args.json):
    with open(args.json) as file:
      saved = json.load(file)
    if saved.get('train') == settings.to_mapping(config.replace(output_dir='(one per run)')):
      runs = saved.get('runs', {})
      print(f'resuming: {len(runs)} runs already in {args.json}', flush=True)

  def save():
    summary = summarise(runs, args.methods, args.alphas)
    write_report(
        args.json, {'train': settings.to_mapping(config.replace(output_dir='(one per run)')),
                    'methods': args.methods, 'alphas': args.alphas, 'seeds': args.seeds},
        train=settings.to_mapping(config.replace(output_dir='(one per run)')),
        runs=runs, summary=summary, ranks={alpha: ranks(by_method) for alpha, by_method in summary.items()},
    )
    return summary

  with tempfile.TemporaryDirectory() as scratch:
    for seed in args.seeds:
      for alpha in args.alphas:
        for method in args.methods:
          key = run_key(method, alpha, seed)
          if key in runs:
            continue
          try:
            runs[key] = one_run(config, method, alpha, seed, scratch)
          except training.ConfigError as error:
            print(f'methods: error: {error}', file=sys.stderr)
            return 2
          print(f'{key}: few-label {100 * runs[key]["few_label_probe"]:.1f}, NMI {runs[key]["nmi"]:.3f}, '
                f'{runs[key]["seconds_per_round"]:.1f} s/round', flush=True)
          save()
  summary = save()
  print(format_summary(summary))
  print(markdown_table(summary))
  plot(summary, args.plot or os.path.splitext(args.json)[0] + '.png')
  return 0


if __name__ == '__main__':
  sys.exit(main())
