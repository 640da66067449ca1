"""Robustness of the aggregators to malicious clients: supervised federated averaging on digits.

Each run trains a small MLP (64-`--hidden`-10) on scikit-learn's digits split
over `--clients` clients by Dirichlet(alpha) label shares; every client takes
part in every round, trains `--local-epochs` of SGD from the global model, and
sends its update. The attackers (a seeded `fraction` of the clients, the same
ones every round) replace theirs (`tff_orchestra.attacks`), and the
aggregator under test (a TFF aggregation process, uniform client weights)
turns the round's updates into the server's step (server learning rate 1).
Client training runs in numpy, outside TFF: only the aggregation is TFF's, so
all aggregators see the same updates for the same seed, round one.

Aggregators: TFF's `MeanFactory` and `tff.learning.robust_aggregator()`;
`ClusterQualityWeighting` with K = 1, K = 4, and `robust=True`; `CoordinateMedian`,
`TrimmedMean(0.2)`, `MultiKrum(num_byzantine=round(0.2 n))` (both configured
for up to 20% attackers) and `MedianNormClipping`.
Attacks (`--attacks`): `sign_flip` (x -5), `gaussian` (3x the honest norm),
`label_flip` (attackers train on flipped labels), `scaling` (label flip, then
x10: model replacement), `alie`, `ipm` (epsilon 0.5); fraction 0 is the clean run.

    python benchmarks/robustness.py            # the full grid, about an hour on 2 cores
    python benchmarks/robustness.py --seeds 0 --alphas 1.0 --attacks sign_flip --fractions 0 0.2

`--task orchestra` trains Orchestra instead (10 clients, alpha 0.1, one seed,
30 rounds after round 0, `make run`'s augmentation, uniform weights), its
learner's parts run one by one (`orchestra.build_orchestra_parts`) so the
attackers replace their model updates between client work and aggregator; the
update attacks only (no labels to flip); scored by the few-label probe and NMI.

Writes the JSON (every run, and the mean and std over seeds per cell), the
plot next to it (accuracy against malicious fraction, one panel per attack,
one row per alpha), and prints a markdown table of the cells. Runs already in
the JSON are kept and not run again (`--fresh` to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np
import tensorflow_federated as tff
from report import watch_memory, write_report

from tff_orchestra import aggregators as agg
from tff_orchestra import attacks
from tff_orchestra import runtime
from tff_orchestra.data import digits
from tff_orchestra.data import partition

NUM_CLASSES = 10
FEATURES = 64


def aggregator_factories(clients: int) -> dict[str, tff.aggregators.WeightedAggregationFactory]:
  """Every aggregator under test, as the weighted model aggregator a learner would get."""
  byzantine = round(0.2 * clients)
  factories = {
      'mean': tff.aggregators.MeanFactory(),
      'robust_aggregator': tff.learning.robust_aggregator(),
      'cqw_k1': agg.ClusterQualityWeighting(1),
      'cqw_k4': agg.ClusterQualityWeighting(4),
      'cqw_robust': agg.ClusterQualityWeighting(4, robust=True),
      'median': agg.CoordinateMedian(),
      'trimmed_mean': agg.TrimmedMean(0.2),
      'multi_krum': agg.MultiKrum(num_byzantine=byzantine),
      'median_norm_clipping': agg.MedianNormClipping(),
  }
  return {name: agg.as_model_aggregator(factory) for name, factory in factories.items()}


ATTACKS = {
    'sign_flip': (attacks.sign_flip(5.0), False),
    'gaussian': (attacks.gaussian(3.0), False),
    'label_flip': (attacks.no_attack, True),
    'scaling': (attacks.scaling(10.0), True),
    'alie': (attacks.alie(), False),
    'ipm': (attacks.ipm(0.5), False),
}


class Mlp:
  """64-h-10 ReLU network on flat parameter vectors, trained by minibatch SGD in numpy."""

  def __init__(self, hidden: int):
    self.shapes = [(FEATURES, hidden), (hidden,), (hidden, NUM_CLASSES), (NUM_CLASSES,)]
    self.size = sum(int(np.prod(s)) for s in self.shapes)

  def initial(self, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    pieces = []
    for shape in self.shapes:
      limit = np.sqrt(6.0 / sum(shape)) if len(shape) == 2 else 0.0
      pieces.append(rng.uniform(-limit, limit, size=shape).ravel())
    return np.concatenate(pieces)

  def unpack(self, flat: np.ndarray) -> list[np.ndarray]:
    out, start = [], 0
    for shape in self.shapes:
      size = int(np.prod(shape))
      out.append(flat[start:start + size].reshape(shape))
      start += size
    return out

  def logits(self, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
    w1, b1, w2, b2 = self.unpack(flat)
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2

  def train(self, flat, x, y, epochs, batch_size, learning_rate, rng) -> np.ndarray:
    flat = flat.copy()
    w1, b1, w2, b2 = self.unpack(flat)  # views: updated in place
    for _ in range(epochs):
      order = rng.permutation(len(x))
      for start in range(0, len(x), batch_size):
        batch = order[start:start + batch_size]
        xb, yb = x[batch], y[batch]
        hidden = np.maximum(xb @ w1 + b1, 0)
        logits = hidden @ w2 + b2
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        grad_logits = probabilities
        grad_logits[np.arange(len(yb)), yb] -= 1
        grad_logits /= len(yb)
        grad_hidden = (grad_logits @ w2.T) * (hidden > 0)
        w2 -= learning_rate * hidden.T @ grad_logits
        b2 -= learning_rate * grad_logits.sum(0)
        w1 -= learning_rate * xb.T @ grad_hidden
        b1 -= learning_rate * grad_hidden.sum(0)
    return flat

  def accuracy(self, flat, x, y) -> float:
    if not np.all(np.isfinite(flat)):
      return float(np.mean(y == 0))  # what a NaN model predicts: the first class
    return float(np.mean(np.argmax(self.logits(flat, x), axis=1) == y))


def run(process, model: Mlp, data, alpha: float, attack: str, fraction: float, seed: int, args) -> dict:
  """One training run; returns its final test accuracy and times."""
  train_x, train_y, test_x, test_y = data
  clients = partition.dirichlet_partition(train_y, args.clients, alpha, seed, min_examples_per_client=args.batch_size)
  malicious = attacks.malicious_clients(args.clients, fraction, seed)
  update_attack, poisons_labels = ATTACKS[attack] if fraction > 0 else (attacks.no_attack, False)
  client_y = [attacks.flip_labels(train_y[ix], NUM_CLASSES) if poisons_labels and bad else train_y[ix]
              for ix, bad in zip(clients, malicious)]
  rng = np.random.default_rng([seed, 1])
  weights = model.initial(seed)
  state = process.initialize()
  aggregation_seconds, round_seconds = [], []
  for _ in range(args.rounds):
    started = time.perf_counter()
    updates = np.stack([
        model.train(weights, train_x[ix], y, args.local_epochs, args.batch_size, args.learning_rate, rng) - weights
        for ix, y in zip(clients, client_y)
    ])
    updates = update_attack(updates, malicious, rng).astype(np.float32)
    aggregating = time.perf_counter()
    output = process.next(state, list(updates), [1.0] * args.clients)
    aggregation_seconds.append(time.perf_counter() - aggregating)
    state = output.state
    weights = weights + np.asarray(output.result, np.float64)
    round_seconds.append(time.perf_counter() - started)
  return dict(
      accuracy=100 * model.accuracy(weights, test_x, test_y),
      aggregation_seconds_per_round=statistics.median(aggregation_seconds),
      seconds_per_round=statistics.median(round_seconds),
  )


ORCHESTRA_ATTACKS = ('sign_flip', 'gaussian', 'alie', 'ipm')  # update attacks: Orchestra's clients have no labels


def run_orchestra(factory, split, alpha: float, attack: str, fraction: float, seed: int, args) -> dict:
  """One Orchestra run on digits, its parts run one by one so the attackers can replace their updates."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from tff_orchestra import evaluation, orchestra  # pylint: disable=import-outside-toplevel
  from tff_orchestra.orchestra.features import embed  # pylint: disable=import-outside-toplevel
  from tff_orchestra.training import sampling  # pylint: disable=import-outside-toplevel

  config = orchestra.OrchestraConfig(flip=False, min_crop_area=0.6, seed=seed)
  parts = orchestra.build_orchestra_parts(
      split.train_images.shape[1:], config=config, client_weighting=tff.learning.ClientWeighting.UNIFORM,
      model_update_aggregation_factory=factory)
  malicious = attacks.malicious_clients(len(split.client_ids), fraction, seed)
  update_attack = ATTACKS[attack][0] if fraction > 0 else attacks.no_attack
  rng = np.random.default_rng([seed, 1])
  weights = parts.initial_model_weights()
  work_state, aggregator_state, finalizer_state = (
      parts.client_work.initialize(), parts.aggregator.initialize(), parts.finalizer.initialize())
  aggregation_seconds, round_seconds = [], []
  for round_num in range(args.orchestra_rounds + 1):  # round 0 is Orchestra's training-free initialisation
    started = time.perf_counter()
    datasets = [orchestra.prepare_client_dataset(
        sampling.shuffled(split.client_data.create_tf_dataset_for_client(cid), (seed, round_num, index)), 16)
        for index, cid in enumerate(split.client_ids)]
    work = parts.client_work.next(work_state, [weights] * len(datasets), datasets)
    work_state = work.state
    updates = [result.update for result in work.result]
    flat = np.stack([np.concatenate([np.ravel(x) for x in tf.nest.flatten(u)]) for u in updates])
    attacked = update_attack(flat, malicious, rng).astype(np.float32)
    updates = [_unflatten(row, updates[0]) for row in attacked]
    aggregating = time.perf_counter()
    aggregated = parts.aggregator.next(aggregator_state, updates, [result.update_weight for result in work.result])
    aggregation_seconds.append(time.perf_counter() - aggregating)
    aggregator_state = aggregated.state
    finalized = parts.finalizer.next(finalizer_state, weights, aggregated.result)
    finalizer_state, weights = finalized.state, finalized.result
    round_seconds.append(time.perf_counter() - started)
  features = {name: embed(weights, images, encoder='small_cnn', projection_dim=config.projection_dim)[0]
              for name, images in (('train', split.train_images), ('test', split.test_images))}
  row = evaluation.evaluate_features('orchestra', features['train'], split.train_labels, features['test'],
                                     split.test_labels, labels_per_class=10, seed=seed)
  return dict(
      accuracy=100 * float(row['few_label_probe']), nmi=float(row['nmi']),
      aggregation_seconds_per_round=statistics.median(aggregation_seconds),
      seconds_per_round=statistics.median(round_seconds),
  )


def _unflatten(row: np.ndarray, like):
  """`row` in the structure, shapes and dtypes of `like` (one client's update)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  leaves, start = [], 0
  for leaf in tf.nest.flatten(like):
    leaf = np.asarray(leaf)
    leaves.append(row[start:start + leaf.size].reshape(leaf.shape).astype(leaf.dtype))
    start += leaf.size
  return tf.nest.pack_sequence_as(like, leaves)


def summarise(results: list[dict]) -> list[dict]:
  """Mean and std of accuracy (and median time) over seeds, per (aggregator, attack, fraction, alpha)."""
  cells: dict[tuple, list[dict]] = {}
  for result in results:
    cells.setdefault((result['aggregator'], result['attack'], result['fraction'], result['alpha']), []).append(result)
  summary = []
  for (aggregator, attack, fraction, alpha), runs in sorted(cells.items()):
    accuracies = [r['accuracy'] for r in runs]
    cell = dict(
        aggregator=aggregator, attack=attack, fraction=fraction, alpha=alpha, seeds=len(runs),
        accuracy_mean=statistics.mean(accuracies), accuracy_std=statistics.pstdev(accuracies),
        aggregation_seconds_per_round=statistics.median(r['aggregation_seconds_per_round'] for r in runs),
    )
    if all('nmi' in r for r in runs):
      cell.update(nmi_mean=statistics.mean(r['nmi'] for r in runs), nmi_std=statistics.pstdev(r['nmi'] for r in runs))
    summary.append(cell)
  return summary


def markdown_table(summary: list[dict], aggregators: list[str], metric: str = 'accuracy_mean') -> str:
  """Rows (alpha, attack, fraction) x columns aggregators: `metric` (mean over seeds), the best in bold."""
  cells = {(s['alpha'], s['attack'], s['fraction'], s['aggregator']): s[metric] for s in summary if metric in s}
  keys = sorted({(s['alpha'], s['attack'], s['fraction']) for s in summary}, key=lambda k: (k[0], k[1] != 'none', k[1], k[2]))
  lines = ['| alpha | attack | malicious | ' + ' | '.join(aggregators) + ' |', '|' + '---|' * (3 + len(aggregators))]
  for alpha, attack, fraction in keys:
    values = [cells.get((alpha, attack, fraction, a)) for a in aggregators]
    best = max((v for v in values if v is not None), default=None)
    digits_shown = 3 if metric.startswith('nmi') else 1
    shown = ['' if v is None else (f'**{v:.{digits_shown}f}**' if v == best else f'{v:.{digits_shown}f}') for v in values]
    lines.append(f'| {alpha:g} | {attack} | {fraction:.0%} | ' + ' | '.join(shown) + ' |')
  return '\n'.join(lines)


def pick_table(summary: list[dict], aggregators: list[str]) -> str:
  """Per attack and alpha: each aggregator's accuracy averaged over the malicious fractions, the best named,
  with those within one point of it; clean runs as their own row."""
  lines = ['| alpha | attack | best (mean accuracy over the fractions) | within 1 point | ' +
           ' | '.join(aggregators) + ' |', '|' + '---|' * (4 + len(aggregators))]
  for alpha in sorted({c['alpha'] for c in summary}):
    for attack in sorted({c['attack'] for c in summary}, key=lambda a: (a != 'none', a)):
      cells = [c for c in summary if c['alpha'] == alpha and c['attack'] == attack]
      average = {a: statistics.mean(c['accuracy_mean'] for c in cells if c['aggregator'] == a)
                 for a in aggregators if any(c['aggregator'] == a for c in cells)}
      if not average:
        continue
      best = max(average, key=average.get)
      close = [a for a in average if a != best and average[a] >= average[best] - 1.0]
      values = ' | '.join(f'{average[a]:.1f}' if a in average else '' for a in aggregators)
      lines.append(f'| {alpha:g} | {attack} | {best} ({average[best]:.1f}) | {", ".join(close) or "-"} | {values} |')
  return '\n'.join(lines)


def plot(summary: list[dict], aggregators: list[str], path: str, ylabel: str = 'test accuracy (%)') -> None:
  """Accuracy against malicious fraction: one panel per attack, one row per alpha; clean runs at fraction 0."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  alphas = sorted({s['alpha'] for s in summary})
  attack_names = sorted({s['attack'] for s in summary} - {'none'}) or ['none']
  figure = Figure(figsize=(3.2 * len(attack_names), 2.8 * len(alphas)), layout='constrained')
  axes = figure.subplots(len(alphas), len(attack_names), squeeze=False, sharey=True)
  for row, alpha in enumerate(alphas):
    for column, attack in enumerate(attack_names):
      axis = axes[row][column]
      for aggregator in aggregators:
        points = sorted((s['fraction'], s['accuracy_mean']) for s in summary
                        if s['aggregator'] == aggregator and s['alpha'] == alpha and s['attack'] in (attack, 'none'))
        if points:
          axis.plot(*zip(*points), marker='o', markersize=3, label=aggregator)
      axis.set_title(f'{attack}, alpha={alpha:g}', fontsize=9)
      axis.set_xlabel('malicious fraction')
      axis.set_ylim(0, 100)
    axes[row][0].set_ylabel(ylabel)
  axes[0][-1].legend(fontsize=7, loc='lower left')
  figure.savefig(path, dpi=120)
  print(f'wrote {path}')


TASK_DEFAULTS = {
    # task: (clients, alphas, seeds, attacks)
    'fedavg': (20, [0.1, 1.0], [0, 1, 2], sorted(ATTACKS)),
    'orchestra': (10, [0.1], [0], list(ORCHESTRA_ATTACKS)),
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--task', choices=sorted(TASK_DEFAULTS), default='fedavg',
                      help='fedavg: supervised MLP (accuracy); orchestra: Orchestra (few-label probe accuracy, NMI)')
  parser.add_argument('--aggregators', nargs='+', default=None, help='default: all')
  parser.add_argument('--attacks', nargs='+', default=None, choices=sorted(ATTACKS), help='default: all the task has')
  parser.add_argument('--fractions', nargs='+', type=float, default=[0.0, 0.1, 0.2, 0.4])
  parser.add_argument('--alphas', nargs='+', type=float, default=None, help='fedavg: 0.1 1.0; orchestra: 0.1')
  parser.add_argument('--seeds', nargs='+', type=int, default=None, help='fedavg: 0 1 2; orchestra: 0')
  parser.add_argument('--clients', type=int, default=None, help='fedavg: 20; orchestra: 10')
  parser.add_argument('--rounds', type=int, default=25, help='fedavg rounds')
  parser.add_argument('--orchestra-rounds', type=int, default=30, help='orchestra rounds after round 0')
  parser.add_argument('--local-epochs', type=int, default=1)
  parser.add_argument('--batch-size', type=int, default=16)
  parser.add_argument('--learning-rate', type=float, default=0.1)
  parser.add_argument('--hidden', type=int, default=32)
  parser.add_argument('--json', default=None, help='default: benchmarks/results/robustness[_orchestra].json')
  parser.add_argument('--fresh', action='store_true', help='ignore runs already in the JSON')
  args = parser.parse_args(argv)
  watch_memory()
  clients, alphas, seeds, task_attacks = TASK_DEFAULTS[args.task]
  args.clients = args.clients or clients
  args.alphas, args.seeds = args.alphas or alphas, args.seeds if args.seeds is not None else seeds
  args.attacks = args.attacks or task_attacks
  if args.task == 'orchestra' and set(args.attacks) - set(ORCHESTRA_ATTACKS):
    parser.error(f'--attacks: Orchestra has no labels to flip; choose from {list(ORCHESTRA_ATTACKS)}')
  args.json = args.json or f"benchmarks/results/robustness{'_orchestra' if args.task == 'orchestra' else ''}.json"

  factories = aggregator_factories(args.clients)
  names = args.aggregators or list(factories)
  unknown = sorted(set(names) - set(factories))
  if unknown:
    parser.error(f'--aggregators: unknown {unknown}; choose from {sorted(factories)}')
  train_x, train_y, test_x, test_y = digits.load_digits_split(seed=0)
  config = {key: value for key, value in vars(args).items() if key not in ('json', 'fresh')}
  grid_keys = ('aggregators', 'attacks', 'fractions', 'alphas', 'seeds')
  results = []
  if not args.fresh and os.path.exists(args.json):
    with open(args.json) as file:
      previous = json.load(file)
    if {k: v for k, v in previous['config'].items() if k not in grid_keys} == {k: v for k, v in config.items() if k not in grid_keys}:
      results = previous['results']
  done = {(r['aggregator'], r['attack'], r['fraction'], r['alpha'], r['seed']) for r in results}
  conditions = [('none', 0.0)] * (0.0 in args.fractions) + [
      (attack, fraction) for attack in args.attacks for fraction in args.fractions if fraction > 0]
  if args.task == 'fedavg':
    model = Mlp(args.hidden)
    data = (train_x.reshape(-1, FEATURES).astype(np.float64), train_y, test_x.reshape(-1, FEATURES).astype(np.float64), test_y)
    value_type = tff.TensorType(np.float32, [model.size])
  with runtime.simulation_context():
    for name in names:
      if args.task == 'fedavg':
        process = factories[name].create(value_type, tff.TensorType(np.float32))
      for alpha in args.alphas:
        for attack, fraction in conditions:
          for seed in args.seeds:
            if (name, attack, fraction, alpha, seed) in done:
              continue
            if args.task == 'fedavg':
              result = run(process, model, data, alpha, attack, fraction, seed, args)
            else:
              split = digits.federated_split(train_x, train_y, test_x, test_y, num_clients=args.clients, alpha=alpha,
                                             seed=seed, min_examples_per_client=16)
              result = run_orchestra(factories[name], split, alpha, attack, fraction, seed, args)
            results.append(dict(aggregator=name, attack=attack, fraction=fraction, alpha=alpha, seed=seed, **result))
            extra = f'  NMI {result["nmi"]:.3f}' if 'nmi' in result else ''
            print(f'{name:22s} {attack:10s} {fraction:4.0%} alpha={alpha:<4g} seed={seed}: {result["accuracy"]:5.1f}%{extra}  '
                  f'{result["aggregation_seconds_per_round"] * 1000:6.1f} ms/round aggregating', flush=True)
          # Saved after every cell: an interrupted grid resumes where it stopped.
          config['aggregators'] = sorted({r['aggregator'] for r in results})
          write_report(args.json, config, results=results, summary=summarise(results))
  summary = summarise(results)
  shown = [name for name in factories if any(s['aggregator'] == name for s in summary)]
  plot(summary, shown, os.path.splitext(args.json)[0] + '.png',
       'few-label probe accuracy (%)' if args.task == 'orchestra' else 'test accuracy (%)')
  print(markdown_table(summary, shown))
  print(pick_table(summary, shown))
  if args.task == 'orchestra':
    print(markdown_table(summary, shown, 'nmi_mean'))
  return 0


if __name__ == '__main__':
  sys.exit(main())
