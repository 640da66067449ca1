"""Privacy against utility: epsilon and representation quality for several noise multipliers.

Trains Orchestra with `tff-orchestra train`'s program on digits (50 clients,
Dirichlet alpha 0.1, 10 clients sampled per round, so the sampling rate is
q = 0.2, 60 rounds) once without DP (the plain `MeanFactory`: no clipping,
no noise) and once per noise multiplier z (default 0, 0.001, 0.01, 0.1 and 1;
z = 0 clips without noise) with a `GaussianNoise` stage on the model update:
fixed L2 clip `--clip` (default 2.0, about the median client update norm
after the first ten rounds), central noise, accounted for the sampling the
program does (10 of 50 clients without replacement), `output='mean'`. Same seed, split
and hyperparameters otherwise, and uniform client weighting in every run
(the DP guarantee needs weights that do not depend on client data). For each
run: epsilon at `--delta` after the last round, amplified by sampling and
against the server (as the run's `GaussianNoise` measurements report them, for
the discrete mechanism that runs, beside `dp_accounting`'s for the real-valued
Gaussian of the same z, which must not be larger), the few-label probe
accuracy, NMI of k-means on the features (plus linear probe and kNN), the
clipped fraction, and the run's wall time. Prints a table and writes JSON.

    python benchmarks/privacy_utility.py --no-flip --min-crop-area 0.6 --json benchmarks/results/privacy_utility.json

Any `tff-orchestra train` option applies to every run, except `--aggregator`:
this benchmark builds the aggregator itself.

What epsilon covers: the model update (every model variable: online and
target networks, BatchNorm statistics) for replacing one client's data by
another's, with `--clients-per-round` of the clients drawn without
replacement each round, as the program draws them
(amplified as `privacy_accounting.amplified_rdp` says, sensitivity 2 x clip), counting
Orchestra's training-free round 0, which goes through the aggregator too.
`epsilon vs server` is the same without amplification: the server draws the
clients and sees who took part. Orchestra's local centroids reach the server outside the aggregator, in
the clear, so the training as a whole is not differentially private: epsilon
bounds what the model-update channel leaks, nothing more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

from report import watch_memory, write_report

from tff_orchestra import settings, training
from tff_orchestra.training.config import run_context

METRICS = ('few_label_probe', 'nmi', 'linear_probe', 'knn', 'ari', 'centroid_nmi')
PERCENT = ('few_label_probe', 'linear_probe', 'knn')
BASELINES = ('random encoder', 'raw pixels')


def gaussian_noise_spec(noise_multiplier: float, clip: float, delta: float) -> str:
  """The `--aggregator` spec of one DP run (clients per round, population and sampling: the run's)."""
  return f'gaussian_noise:noise_multiplier={noise_multiplier!r},clip={clip!r},target_delta={delta!r},output=mean'



def dp_measurements(rows: list[dict]) -> dict:
  """The `GaussianNoise` measurements of the last round, and the clipped fraction over the training rounds."""
  keys = [k for k in rows[-1] if k.endswith('/epsilon')] if rows else []
  if len(keys) != 1:
    return {}
  prefix = keys[0][: -len('epsilon')]
  last = rows[-1]
  epsilon = float(last[prefix + 'epsilon'])
  against_server = float(last[prefix + 'epsilon_against_server'])
  # Round 0 trains nothing: its update is zero and never clipped.
  training = [float(row[prefix + 'clipped_fraction']) for row in rows if row['round'] > 0] or [0.0]
  return {
      'epsilon': epsilon if math.isfinite(epsilon) else None,
      'epsilon_against_server': against_server if math.isfinite(against_server) else None,
      'rounds_accounted': int(last[prefix + 'rounds']),
      'noise_stddev_of_sum': float(last[prefix + 'noise_stddev']),
      'clipped_fraction_last_round': float(last[prefix + 'clipped_fraction']),
      'clipped_fraction_mean': sum(training) / len(training),
  }


def read_rows(output_dir: str) -> list[dict]:
  """The per-round metrics a run wrote so far (what is left when its evaluation fails)."""
  path = os.path.join(output_dir, 'metrics.json')
  if not os.path.exists(path):
    return []
  with open(path) as file:
    return json.load(file)


def one_run(config: training.TrainConfig, name: str, aggregators: tuple[str, ...], output_dir: str) -> dict:
  """Trains and evaluates one configuration; returns its result row."""
  config = config.replace(aggregators=aggregators, output_dir=output_dir)
  started = time.perf_counter()
  error = None
  try:
    result = training.run(config)
    rows, table = result['rows'], result['table']
  except training.ConfigError:
    raise
  except Exception as exception:  # pylint: disable=broad-except
    # A run destroyed by noise may leave non-finite features: report it, do not hide it.
    error = f'{type(exception).__name__}: {exception}'
    rows, table = read_rows(output_dir), []
  seconds = time.perf_counter() - started
  orchestra_row = next((row for row in table if row['method'] == 'orchestra'), {})
  return {
      'run': name,
      'aggregators': list(aggregators),
      'seconds': seconds,
      'error': error,
      **{metric: orchestra_row.get(metric) for metric in METRICS},
      **dp_measurements(rows),
      'cluster_loss_last_round': rows[-1].get('client_work/train/cluster_loss') if rows else None,
      'clusters_in_use_last_round': rows[-1].get('client_work/global_clustering/clusters_in_use') if rows else None,
      # The baselines do not depend on the aggregator (same seed and split): kept once, in the report.
      '_baselines': {row['method']: {m: row.get(m) for m in METRICS} for row in table if row['method'] in BASELINES},
  }


def _cell(value, metric: str, width: int) -> str:
  if value is None:
    return f'{"-":>{width}}'
  if metric in PERCENT:
    return f'{100.0 * value:>{width}.1f}'
  return f'{value:>{width}.3f}'


def _epsilon_cell(result: dict, key: str = 'epsilon') -> str:
  if result['noise_multiplier'] is None or not result['noise_multiplier'] > 0:
    return 'inf (no DP)' if result['noise_multiplier'] is None else 'inf (z = 0)'
  epsilon = result.get(key)
  if epsilon is None:
    return '-'
  return f'{epsilon:.3g}'


def format_table(results: list[dict], baselines: dict, sampling, delta: float) -> str:
  header = (
      f"{'run':<14}{'z':>6}{'clip':>6}{'noise std/coord':>16}{'epsilon':>13}{'vs server':>13}{'clipped':>9}"
      f"{'few-label %':>12}{'NMI':>7}{'linear %':>9}{'kNN %':>7}{'seconds':>9}"
  )
  lines = [f'{sampling.describe()}, delta = {delta:g}', header, '-' * len(header)]
  for result in results:
    dp = result['noise_multiplier'] is not None
    lines.append(
        f"{result['run']:<14}"
        + (f"{result['noise_multiplier']:>6g}{result['clip']:>6g}" if dp else f'{"-":>6}{"-":>6}')
        + (f"{result['noise_stddev_per_coordinate_of_mean']:>16.3g}" if dp else f'{"0":>16}')
        + f'{_epsilon_cell(result):>13}{_epsilon_cell(result, "epsilon_against_server"):>13}'
        + (f"{result['clipped_fraction_mean']:>9.2f}" if dp and 'clipped_fraction_mean' in result else f'{"-":>9}')
        + _cell(result['few_label_probe'], 'few_label_probe', 12)
        + _cell(result['nmi'], 'nmi', 7)
        + _cell(result['linear_probe'], 'linear_probe', 9)
        + _cell(result['knn'], 'knn', 7)
        + f"{result['seconds']:>9.0f}"
        + (f"  FAILED: {result['error']}" if result['error'] else '')
    )
  for method, row in baselines.items():
    lines.append(
        f'{method:<14}' + f'{"":>6}{"":>6}{"":>16}{"":>13}{"":>13}{"":>9}'
        + _cell(row['few_label_probe'], 'few_label_probe', 12) + _cell(row['nmi'], 'nmi', 7)
        + _cell(row['linear_probe'], 'linear_probe', 9) + _cell(row['knn'], 'knn', 7)
    )
  return '\n'.join(lines)


def main(argv=None) -> int:
  # A DP benchmark needs q < 1 and data-independent weights: these defaults differ from `train`'s.
  base = training.TrainConfig.build(
      output_dir='unused', num_clients=50, clients_per_round=10, rounds=60, client_weighting='uniform', progress=False,
  )
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  settings.add_arguments(parser, training.TrainConfig, exclude=('run.output_dir', 'aggregation.aggregators'), base=base)
  parser.add_argument(
      '--noise-multipliers', type=float, nargs='+', default=[0.0, 0.001, 0.01, 0.1, 1.0],
      help='one DP run per noise multiplier z (0: clipping only); a run without DP always comes first',
  )
  parser.add_argument(
      '--clip', type=float, default=2.0,
      help='L2 clip norm of a client update (all model variables); about the median norm after round 10 on digits',
  )
  parser.add_argument('--delta', type=float, default=1e-5, help='delta of the reported epsilon')
  parser.add_argument('--json', default='benchmarks/results/privacy_utility.json')
  args = parser.parse_args(argv)
  watch_memory()
  if not args.clip > 0 or not 0 < args.delta < 1 or any(not z >= 0 for z in args.noise_multipliers):
    parser.error('--clip must be > 0, --delta in (0, 1) and the noise multipliers >= 0')

  try:
    config = settings.replace(base, settings.given_arguments(args))
  except settings.ConfigError as error:
    parser.error(str(error))
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tff_orchestra.aggregators import privacy_accounting  # pylint: disable=import-outside-toplevel

  sampling = privacy_accounting.Sampling(
      run_context(config).client_sampling, config.data.num_clients, config.run.clients_per_round
  )
  runs = [('no DP', None, ())] + [
      (f'DP z={z:g}', z, (gaussian_noise_spec(z, args.clip, args.delta),))
      for z in args.noise_multipliers
  ]
  results, baselines = [], {}
  started = time.perf_counter()
  with tempfile.TemporaryDirectory() as scratch:
    for index, (name, z, aggregators) in enumerate(runs):
      try:
        result = one_run(config, name, aggregators, os.path.join(scratch, f'run_{index}'))
      except training.ConfigError as error:
        print(f'privacy_utility: error: {error}', file=sys.stderr)
        return 2
      result['noise_multiplier'] = z
      if z is None:
        result.update(epsilon=None, epsilon_note='no DP: no clipping, no noise, no privacy guarantee (epsilon = inf)')
      else:
        result.update(
            clip=args.clip,
            delta=args.delta,
            # The mean update's noise per coordinate: z * clip / clients per round.
            noise_stddev_per_coordinate_of_mean=z * args.clip / sampling.clients_per_round,
        )
        if 'rounds_accounted' in result:
          # The real-valued Gaussian's epsilon for the rounds the run recorded, from dp_accounting's RDP (at each
          # order the lesser of its sampled and its unsampled bound, as ours takes): a lower reference.
          real_rdp = np.minimum(privacy_accounting.rdp_per_round(z, sampling),
                                privacy_accounting.rdp_per_round(z, sampling, against_server=True))
          real = float(privacy_accounting.epsilon_in_graph(real_rdp, result['rounds_accounted'], args.delta))
          result['epsilon_real_valued_gaussian'] = real if math.isfinite(real) else None
          if math.isfinite(real) and not (result['epsilon'] or math.inf) >= real * (1 - 1e-9):
            print(f"{name}: warning: the run reports epsilon {result['epsilon']}, below the real-valued Gaussian's {real}",
                  file=sys.stderr)
        if not z > 0:
          result['epsilon_note'] = 'z = 0: clipping only, no noise (epsilon = inf)'
      baselines = baselines or result.pop('_baselines')
      result.pop('_baselines', None)
      results.append(result)
      print(
          f"{name}: {result['seconds']:.0f} s, few-label {_cell(result['few_label_probe'], 'few_label_probe', 0)} %, "
          f"epsilon {_epsilon_cell(result)}" + (f", FAILED: {result['error']}" if result['error'] else ''),
          flush=True,
      )
  total = time.perf_counter() - started
  print(format_table(results, baselines, sampling, args.delta))
  print(f'total {total:.0f} s')
  write_report(
      args.json,
      {'train': settings.to_mapping(config.replace(output_dir='(one per run)')),
       **{k: v for k, v in vars(args).items() if k in ('noise_multipliers', 'clip', 'delta')}},
      sampling=sampling.describe(),
      delta=args.delta,
      accounting=(
          f'RDP (dp_accounting) of the Gaussian mechanism, {sampling.describe()}, every round including the '
          'training-free round 0; epsilon_against_server without amplification by sampling; covers the model '
          "update only (Orchestra's local centroids reach the server in the clear)"
      ),
      total_seconds=total,
      results=results,
      baselines=baselines,
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
