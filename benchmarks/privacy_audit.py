"""Empirical privacy audit of the DP factories: a lower bound on epsilon that must stay below the reported one.

A one-run audit in the manner of Steinke, Nasr and Jagielski 2023 ("Privacy
auditing with one (1) training run", Appendix D for the test used here). The
mechanism is the library's own aggregation process (`GaussianNoise`, or
`DistributedDiscreteGaussian`), run by TFF:
each round has `--slots` canary slots, one coordinate each of a `--slots`-long
vector; each canary takes part independently with probability 1/2, as a client
whose value is `clip` on its own coordinate (norm exactly `clip`, so clipping
never helps the auditor). The auditor sees only the released noisy sums, scores
each canary by its coordinate, guesses "in" for the `--guesses` highest scores
and "out" for as many lowest, and counts correct guesses. The test then gives
the largest epsilon that (epsilon, delta)-DP rules out at 95% confidence: a
lower bound on the true epsilon of one round for adding or removing one client,
which is what every canary's presence is.

Each mechanism is audited against the epsilon the library reports for it:

* `central` (`GaussianNoise`) and `distributed` (`DistributedDiscreteGaussian`
  with every slot a client, sending zeros when its canary is out, so the noise
  shares are all there: its zero-out relation, sensitivity `clip`): the lower
  bound must stay below the epsilon each reports, or the accounting (or the
  noise) is wrong;
* two deliberately broken mechanisms, reported as if they were `central`: noise
  halved, and noise off. The audit must catch them (lower bound above the
  reported epsilon).

    python benchmarks/privacy_audit.py --json benchmarks/results/privacy_audit.json

With the defaults (100 rounds of 1000 slots: 100,000 canaries, 1000 guesses
each way, z = 2, delta = 1e-5) the audit separates the two cases with a margin
in simulation (numpy, 6 seeds: 1.15-1.31 for z = 2, 2.50-2.71 for z = 1,
against a reported 2.17). More canaries do not help by themselves: the test's
`2 m delta` term grows with them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from report import watch_memory, write_report
from scipy import stats

CONFIDENCE = 0.95
MECHANISMS = ('central', 'distributed', 'broken: noise halved', 'broken: noise off')


def p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
  """P[at least `correct` of `guesses` right] for an (epsilon, delta)-DP mechanism (Steinke et al., Theorem 5.2).

  Under epsilon-DP the correct guesses are dominated by Binomial(guesses, q),
  q = e^eps / (1 + e^eps); delta adds at most `2 * canaries * delta` times the
  largest average binomial mass just below `correct`.
  """
  q = 1.0 / (1.0 + math.exp(-epsilon))
  tail = stats.binom.sf(correct - 1, guesses, q)
  below = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)  # correct-1, ..., 0
  spread = np.max(np.cumsum(below) / np.arange(1, correct + 1)) if correct > 0 else 0.0
  return min(1.0, tail + spread * delta * 2 * canaries)


def epsilon_lower_bound(canaries: int, guesses: int, correct: int, delta: float, confidence: float = CONFIDENCE) -> float:
  """The largest epsilon that `correct` of `guesses` rules out at `confidence` (0 if none)."""
  alpha = 1.0 - confidence
  if p_value(canaries, guesses, correct, 0.0, delta) >= alpha:
    return 0.0
  low, high = 0.0, 1.0
  while p_value(canaries, guesses, correct, high, delta) < alpha:
    low, high = high, 2.0 * high
  for _ in range(50):
    middle = (low + high) / 2.0
    low, high = (middle, high) if p_value(canaries, guesses, correct, middle, delta) < alpha else (low, middle)
  return low


def _factory(mechanism: str, noise_multiplier: float, clip: float, slots: int, delta: float):
  from tff_orchestra import aggregators as agg  # pylint: disable=import-outside-toplevel

  actual = {'broken: noise halved': noise_multiplier / 2.0, 'broken: noise off': 0.0}.get(mechanism, noise_multiplier)
  if mechanism == 'distributed':
    return agg.DistributedDiscreteGaussian(actual, clip, expected_clients_per_round=slots, target_delta=delta, output='sum')
  return agg.GaussianNoise(actual, clip, target_delta=delta, output='sum')


def audit(mechanism: str, args: argparse.Namespace) -> dict:
  """Runs the mechanism on `rounds x slots` canaries and tests the guesses; returns the result row."""
  import tensorflow_federated as tff  # pylint: disable=import-outside-toplevel

  value_type = tff.TensorType(np.float32, [args.slots])
  factory = _factory(mechanism, args.noise_multiplier, args.clip, args.slots, args.delta)
  process = factory.create(value_type)
  honest = mechanism if not mechanism.startswith('broken') else 'central'  # what a broken mechanism claims to be
  reported = _factory(honest, args.noise_multiplier, args.clip, args.slots, args.delta)
  rng = np.random.default_rng(args.seed)
  inside, scores = [], []
  started = time.perf_counter()
  canaries = args.clip * np.eye(args.slots, dtype=np.float32)
  state = process.initialize()
  for _ in range(args.rounds):
    present = rng.random(args.slots) < 0.5
    if mechanism == 'distributed':
      clients = list(canaries * present[:, np.newaxis])  # every slot sends: its canary, or zeros
    else:
      clients = list(canaries[present])
    output = process.next(state, clients)
    state = output.state
    inside.append(present)
    scores.append(np.asarray(output.result) / args.clip)
  seconds = time.perf_counter() - started
  inside, scores = np.concatenate(inside), np.concatenate(scores)
  order = np.argsort(scores)
  guessed_in, guessed_out = order[-args.guesses:], order[: args.guesses]
  correct = int(inside[guessed_in].sum() + (~inside[guessed_out]).sum())
  lower_bound = epsilon_lower_bound(inside.size, 2 * args.guesses, correct, args.delta)
  reported_epsilon = reported.epsilon_after(1, value_type)  # each canary is in one round: one round's epsilon
  return {
      'mechanism': mechanism,
      'noise_multiplier_run': factory.noise_multiplier,
      'reported_epsilon': reported_epsilon,
      'canaries': int(inside.size),
      'guesses': 2 * args.guesses,
      'correct': correct,
      'epsilon_lower_bound': lower_bound,
      'lower_bound_above_reported': lower_bound > reported_epsilon,
      'seconds': seconds,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--noise-multiplier', type=float, default=2.0)
  parser.add_argument('--clip', type=float, default=1.0)
  parser.add_argument('--delta', type=float, default=1e-5)
  parser.add_argument('--rounds', type=int, default=100, help='rounds, each with its own canaries')
  parser.add_argument('--slots', type=int, default=1000, help='canary slots per round (the vector length)')
  parser.add_argument('--guesses', type=int, default=1000, help='guesses "in" and as many "out"')
  parser.add_argument('--mechanisms', nargs='+', choices=MECHANISMS, default=list(MECHANISMS))
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default='benchmarks/results/privacy_audit.json')
  args = parser.parse_args(argv)
  watch_memory()
  if not args.noise_multiplier > 0 or not args.clip > 0 or not 0 < args.delta < 1:
    parser.error('--noise-multiplier and --clip must be > 0, --delta in (0, 1)')
  if min(args.rounds, args.slots, args.guesses) < 1 or 2 * args.guesses > args.rounds * args.slots:
    parser.error('--rounds, --slots, --guesses must be >= 1, and 2 x --guesses at most the canaries')

  from tff_orchestra import runtime  # pylint: disable=import-outside-toplevel

  rows = []
  with runtime.simulation_context():
    for mechanism in args.mechanisms:
      row = audit(mechanism, args)
      rows.append(row)
      print(
          f"{mechanism:<22} z run {row['noise_multiplier_run']:<5g} reported epsilon {row['reported_epsilon']:.3f}  "
          f"lower bound {row['epsilon_lower_bound']:.3f}  ({row['correct']}/{row['guesses']} correct of "
          f"{row['canaries']} canaries, {row['seconds']:.0f} s)"
          + ('  <- caught' if row['lower_bound_above_reported'] else ''),
          flush=True,
      )
  write_report(
      args.json,
      {k: v for k, v in vars(args).items() if k != 'json'},
      confidence=CONFIDENCE,
      relation='central: add or remove one client; distributed: one client value replaced by zeros (sensitivity clip)',
      results=rows,
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
