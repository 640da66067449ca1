"""Privacy accounting: sampling and neighbouring relations, RDP of what runs, epsilon in Python and in-graph.

What is accounted (`Sampling`): the neighbouring relation follows from how a
round's clients are drawn.

* `'poisson'`: each client of `population` takes part independently with
  probability q = `clients_per_round / population`. Relation: adding or
  removing one client; sensitivity `clip`.
* `'fixed_size'`: exactly `clients_per_round` of `population`, drawn uniformly
  without replacement (what `tff-orchestra train` does). Relation: replacing
  one client's data by another's, the population size public; the sum of
  clipped values then moves by up to `2 * clip` (and an adaptive clip's count
  by twice as much too). When that is every client of the population, there
  is no sampling: every round includes every client, and adding one includes
  it too, so the relation is add/remove, as for `'none'`.
* `'none'`: no amplification: every round is assumed to include the client.
  Relation: add or remove one client.

Against the server, which draws the clients and sees who took part, sampling
does not amplify: `against_server=True` accounts every round as including
the client, under the same relation, so the two numbers compare.

The factories run discrete Gaussian noise on integers; their RDP is
`discrete_gaussian_sum_rdp` (Kairouz, Liu and Steinke 2021, Proposition 14),
amplified by sampling with bounds valid for any RDP curve (`amplified_rdp`).
`round_event`, `rdp_per_round` and `epsilon_python` give dp_accounting's
numbers for the real-valued Gaussian mechanism (RDP, or its tighter PLD
accountant): the reference the tests and notebooks compare with, not what any
factory here runs.

`dp_accounting` is Python; TFF runs aggregation on a C++ worker that cannot
call Python. Every round of a mechanism with fixed noise and sampling spends
the same Renyi-DP vector, so the factories compute it once, at `create()`,
and convert `rounds * rdp` to epsilon inside the TensorFlow graph with the
formula `dp_accounting` uses (`rdp_privacy_accountant.compute_epsilon`:
Proposition 12 of Canonne, Kamath and Steinke 2020); tests check it equals
`RdpAccountant.get_epsilon` for the same RDP.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Optional

import dp_accounting
import numpy as np
import tensorflow as tf
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

from tff_orchestra import _checks

RDP_ORDERS = np.array(rdp_privacy_accountant.DEFAULT_RDP_ORDERS, dtype=np.float64)

POISSON, FIXED_SIZE, NO_SAMPLING = 'poisson', 'fixed_size', 'none'
SCHEMES = (POISSON, FIXED_SIZE, NO_SAMPLING)
ACCOUNTANTS = ('rdp', 'pld')
ADD_OR_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How a round's clients are drawn: it fixes the events and the neighbouring relation (module docstring)."""

  scheme: str = NO_SAMPLING
  population: Optional[int] = None
  clients_per_round: Optional[int] = None

  def __post_init__(self):
    if self.scheme not in SCHEMES:
      raise ValueError(f'sampling must be one of {SCHEMES}, got {self.scheme!r}')
    if self.scheme == NO_SAMPLING:
      return
    _checks.check_number(self.population, 'population', low=1, integer=True)
    _checks.check_number(self.clients_per_round, 'clients_per_round', low=1, integer=True)
    if self.population < self.clients_per_round:
      raise ValueError(
          f'population ({self.population}) must be at least the clients per round ({self.clients_per_round})'
      )

  @property
  def amplifies(self) -> bool:
    """False when every round includes every client (no sampling, or all of the population)."""
    return self.scheme != NO_SAMPLING and self.clients_per_round < self.population

  @property
  def relation(self) -> dp_accounting.NeighboringRelation:
    return REPLACE_ONE if self.scheme == FIXED_SIZE and self.amplifies else ADD_OR_REMOVE

  @property
  def probability(self) -> Optional[float]:
    """The chance that a given client takes part in a round (None without sampling)."""
    return None if self.scheme == NO_SAMPLING else self.clients_per_round / self.population

  def describe(self) -> str:
    if self.scheme == FIXED_SIZE and not self.amplifies:
      return f'all {self.population} clients in every round, add/remove one client'
    if self.scheme == POISSON:
      return f'Poisson sampling, q = {self.clients_per_round}/{self.population}, add/remove one client'
    if self.scheme == FIXED_SIZE:
      return (
          f'{self.clients_per_round} of {self.population} clients drawn without replacement, '
          'replace one client (sensitivity 2 x clip)'
      )
    return 'no amplification by sampling (every round assumed to include the client), add/remove one client'


class DifferentiallyPrivateStage:
  """What the trainer and `epsilon_of_stages` ask of a DP factory, and the plumbing its subclasses share.

  A subclass sets `_noise_multiplier`, `_target_delta` and `_max_epsilon`
  and implements `epsilon_after(rounds, value_type)` (epsilon after that many
  released rounds on values of that type) and `noised_channel_type(value_type)`
  (what its noised aggregation carries, for `privacy_check`); `placement`
  says who adds the noise. `rdp_curve(value_type)` (its unamplified RDP per
  round) and `sampling` make it composable by `epsilon_of_stages`. A user's
  factory with these attributes takes part the same way.
  """

  differentially_private = True

  @property
  def noise_multiplier(self) -> float:
    return self._noise_multiplier

  @property
  def target_delta(self) -> float:
    return self._target_delta

  @property
  def max_epsilon(self) -> Optional[float]:
    return self._max_epsilon


def stated_sampling(
    scheme: str, population: Optional[int], clients_per_round: Optional[int], target_delta: float
) -> Sampling:
  """The `Sampling` a DP factory's arguments state (none without `population`), checked with its `target_delta`.

  Raises ValueError for a scheme other than `'poisson'` or `'fixed_size'`, a
  population without clients per round or below them, or a target delta
  outside (0, 1) or not below 1 / population.
  """
  if scheme not in (POISSON, FIXED_SIZE):
    raise ValueError(f"sampling must be 'poisson' or 'fixed_size', got {scheme!r}")
  _checks.check_number(target_delta, 'target_delta', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
  if population is None:
    return Sampling()
  if clients_per_round is None:
    raise ValueError('population needs expected_clients_per_round')
  sampling = Sampling(scheme, population, clients_per_round)
  if target_delta >= 1.0 / population:
    raise ValueError(
        f'target_delta ({target_delta:g}) must be below 1/population ({1.0 / population:g}): a mechanism that '
        "publishes one client's data in the clear with probability delta would meet it"
    )
  return sampling


def round_event(noise_multiplier: float, sampling: Sampling, against_server: bool = False) -> dp_accounting.DpEvent:
  """The `DpEvent` of one round of the Gaussian mechanism (noise std / clip = `noise_multiplier`).

  Under replace-one the sum moves by up to 2 x clip: half the noise multiplier.
  Without noise the round is `NonPrivateDpEvent` (epsilon infinite).
  """
  if not noise_multiplier > 0:
    return dp_accounting.NonPrivateDpEvent()
  if sampling.relation == REPLACE_ONE:
    noise_multiplier /= 2.0
  if against_server:
    return dp_accounting.GaussianDpEvent(noise_multiplier)
  if sampling.scheme == POISSON:
    return dp_accounting.PoissonSampledDpEvent(sampling.probability, dp_accounting.GaussianDpEvent(noise_multiplier))
  if sampling.scheme == FIXED_SIZE and sampling.amplifies:
    return dp_accounting.SampledWithoutReplacementDpEvent(
        sampling.population, sampling.clients_per_round, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
  return dp_accounting.GaussianDpEvent(noise_multiplier)


def training_event(
    noise_multiplier: float, sampling: Sampling, rounds: int, against_server: bool = False
) -> dp_accounting.DpEvent:
  """The `DpEvent` of `rounds` rounds of the same mechanism."""
  return dp_accounting.SelfComposedDpEvent(round_event(noise_multiplier, sampling, against_server), int(rounds))


def rdp_per_round(noise_multiplier: float, sampling: Sampling, against_server: bool = False) -> np.ndarray:
  """Renyi-DP of one round at `RDP_ORDERS`, as computed by dp_accounting."""
  accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS), sampling.relation)
  accountant.compose(round_event(noise_multiplier, sampling, against_server))
  return np.array(accountant._rdp, dtype=np.float64)  # pylint: disable=protected-access


def discrete_gaussian_sum_rdp(orders, sensitivity: float, variance: int, count: int, dimension: int) -> np.ndarray:
  """RDP at `orders` of adding the sum of `count` draws of N_Z(0, variance) to each of `dimension` integer coordinates.

  For a query whose integer L2 sensitivity is at most `sensitivity`:
  Proposition 14 of Kairouz, Liu and Steinke 2021 (the least of its three
  bounds; its L1 term with the L1 sensitivity at most sensitivity * min(sqrt(d),
  sensitivity)), with tau = 10 * sum_{k<count} exp(-2 pi**2 variance k / (k + 1)).
  One draw (count 1, tau 0) is the discrete Gaussian, whose RDP is that of the
  Gaussian: alpha * sensitivity**2 / (2 * variance) (Canonne, Kamath and Steinke 2020).
  """
  orders = np.asarray(orders, dtype=np.float64)
  if variance == 0:
    return np.full_like(orders, np.inf)
  total_std = math.sqrt(count * variance)
  l2_scale = sensitivity / total_std
  l1_scale = sensitivity * min(math.sqrt(dimension), sensitivity) / total_std
  tau = 10.0 * sum(math.exp(-2.0 * math.pi**2 * variance * k / (k + 1)) for k in range(1, count))
  return np.minimum.reduce([
      orders / 2.0 * l2_scale**2 + tau * dimension,
      orders / 2.0 * (l2_scale**2 + 2.0 * l1_scale * tau + tau**2 * dimension),
      orders / 2.0 * (l2_scale + math.sqrt(dimension) * tau) ** 2,
  ])


def amplified_rdp(rdp_of_order: Callable[[int], float], sampling: Sampling) -> np.ndarray:
  """RDP at `RDP_ORDERS` of any mechanism with RDP `rdp_of_order(alpha)` (under `sampling.relation`), run on sampled clients.

  For mechanisms without a dp_accounting event (the discrete Gaussian), from
  bounds that hold for every mechanism with that RDP curve, at integer orders:

  * Poisson sampling (add/remove one): Zhu and Wang 2019, "Poisson subsampled
    Renyi differential privacy", Theorem 6 (the general upper bound);
  * fixed-size sampling without replacement (replace one): Wang, Balle and
    Kasiviswanathan 2019, Theorem 9, with the mechanism's RDP at order
    infinity taken as infinite.

  At each order the least of the amplified and the unamplified bound; at
  fractional orders the unamplified one. Looser than dp_accounting's events
  for the Gaussian, which use the Gaussian's own form (tests compare them).
  """
  unamplified = np.array([rdp_of_order(order) for order in RDP_ORDERS], dtype=np.float64)
  if not sampling.amplifies:
    return unamplified
  q = sampling.probability
  amplified = np.array([
      _subsampled_rdp(rdp_of_order, int(order), q, sampling.scheme) if float(order).is_integer() and order >= 2 else np.inf
      for order in RDP_ORDERS
  ])
  return np.minimum(amplified, unamplified)


def _subsampled_rdp(rdp_of_order: Callable[[int], float], alpha: int, q: float, scheme: str) -> float:
  """The general bound of `amplified_rdp` at one integer order alpha >= 2."""
  orders = np.arange(2, alpha + 1)
  log_comb = special.gammaln(alpha + 1) - special.gammaln(orders + 1) - special.gammaln(alpha - orders + 1)
  rdp = np.array([rdp_of_order(int(j)) for j in orders], dtype=np.float64)
  if scheme == POISSON:
    # (1-q)^(a-1) (a q - q + 1) + C(a,2) q^2 (1-q)^(a-2) e^eps(2) + 3 sum_{l>=3} C(a,l) q^l (1-q)^(a-l) e^((l-1) eps(l))
    first = (alpha - 1) * math.log1p(-q) + math.log1p((alpha - 1) * q)
    rest = log_comb + orders * math.log(q) + (alpha - orders) * math.log1p(-q) + (orders - 1) * rdp
    rest[1:] += math.log(3.0)
  else:
    # 1 + q^2 C(a,2) min(4 (e^eps(2) - 1), 2 e^eps(2)) + sum_{j>=3} 2 q^j C(a,j) e^((j-1) eps(j))
    first = 0.0
    second = min(math.log(4.0) + _log_expm1(rdp[0]) if rdp[0] > 0 else -np.inf, math.log(2.0) + rdp[0])
    rest = log_comb + orders * math.log(q) + np.concatenate([[second], math.log(2.0) + (orders[1:] - 1) * rdp[1:]])
  return float(special.logsumexp(np.concatenate([[first], rest])) / (alpha - 1))


def _log_expm1(x: float) -> float:
  """log(e^x - 1) for x > 0, without overflow for large x (small noise multipliers have RDP in the thousands)."""
  return math.log(math.expm1(x)) if x < 30.0 else x + math.log1p(-math.exp(-x))


def joint_epsilon(
    curves: Sequence[Callable[[int], float]],
    sampling: Sampling,
    rounds: int,
    target_delta: float,
    against_server: bool = False,
) -> float:
  """Epsilon after `rounds` rounds in which the same sampled clients take part in every mechanism of `curves`.

  Each curve is a mechanism's unamplified RDP under `sampling.relation`.
  What one round releases about a client is all of them together, so their
  RDPs add up first and the sum is amplified once (`amplified_rdp`); adding
  separately amplified RDPs would treat the mechanisms' samples as independent.
  """
  def joint(order):
    return float(sum(curve(order) for curve in curves))

  rdp = amplified_rdp(joint, Sampling() if against_server else sampling)
  return float(epsilon_in_graph(rdp, tf.constant(rounds, tf.int64), target_delta))


def epsilon_of_stages(stages: Sequence, value_types: Sequence, rounds: int, target_delta: float,
                      against_server: bool = False) -> float:
  """`joint_epsilon` of DP factories (`GaussianNoise`, or a user's with `rdp_curve`) on the values they see.

  The stages must account the same `sampling` (the same clients feed all of
  them). Raises ValueError otherwise, or for a stage without `rdp_curve`
  (`DistributedDiscreteGaussian`: its zero-out relation does not compose with
  theirs).
  """
  samplings = {getattr(stage, 'sampling', None) for stage in stages}
  if len(samplings) != 1 or None in samplings or not all(hasattr(stage, 'rdp_curve') for stage in stages):
    raise ValueError(
        'epsilon_of_stages: every stage needs rdp_curve() and the same sampling, got '
        + ', '.join(f'{type(stage).__name__} ({getattr(stage, "sampling", None)})' for stage in stages)
    )
  curves = [stage.rdp_curve(value_type) for stage, value_type in zip(stages, value_types)]
  return joint_epsilon(curves, samplings.pop(), rounds, target_delta, against_server)


def epsilon_of_event(
    event: dp_accounting.DpEvent,
    target_delta: float,
    relation: dp_accounting.NeighboringRelation = ADD_OR_REMOVE,
    accountant: str = 'rdp',
) -> float:
  """Epsilon of a `DpEvent` at `target_delta` under `relation`, from dp_accounting's RDP or PLD accountant."""
  if accountant == 'rdp':
    composer = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS), relation)
  elif accountant == 'pld':
    composer = pld_privacy_accountant.PLDAccountant(relation)
  else:
    raise ValueError(f'accountant must be one of {ACCOUNTANTS}, got {accountant!r}')
  if not composer.supports(event):
    raise NotImplementedError(
        f"dp_accounting's {accountant.upper()} accountant cannot account {type(event).__name__} events "
        f'under {relation.name}' + (" (its PLD accountant has no sampling without replacement): use accountant='rdp'"
                                    if accountant == 'pld' else '')
    )
  composer.compose(event)
  return float(composer.get_epsilon(target_delta))


def epsilon_python(
    noise_multiplier: float,
    sampling: Sampling,
    rounds: int,
    target_delta: float,
    accountant: str = 'rdp',
    against_server: bool = False,
) -> float:
  """Epsilon after `rounds` rounds, straight from dp_accounting (reference)."""
  return epsilon_of_event(
      training_event(noise_multiplier, sampling, rounds, against_server), target_delta, sampling.relation, accountant
  )


def epsilon_in_graph(
    rdp_one_round: np.ndarray, rounds: tf.Tensor, target_delta: float
) -> tf.Tensor:
  """Epsilon (float64) after `rounds` rounds, inside a TF graph."""
  one_round = tf.constant(rdp_one_round, tf.float64)
  rounds = tf.cast(rounds, tf.float64)
  # 0 * inf (no noise, no rounds yet) is NaN: no rounds spend nothing.
  return epsilon_of_rdp_in_graph(tf.where(rounds > 0.0, rounds * one_round, tf.zeros_like(one_round)), target_delta)


def epsilon_of_rdp_in_graph(rdp: tf.Tensor, target_delta: float) -> tf.Tensor:
  """Epsilon (float64) of a total RDP vector at `RDP_ORDERS`, in a TF graph."""
  orders = tf.constant(RDP_ORDERS, tf.float64)
  delta = tf.constant(target_delta, tf.float64)
  via_kl = delta**2 + tf.math.expm1(-rdp) > 0.0
  bound = rdp + tf.math.log1p(-1.0 / orders) - tf.math.log(delta * orders) / (orders - 1.0)
  usable = orders > 1.01
  eps = tf.where(
      via_kl,
      tf.zeros_like(rdp),
      tf.where(usable, bound, tf.fill(tf.shape(rdp), tf.constant(np.inf, tf.float64))),
  )
  return tf.maximum(tf.reduce_min(eps), 0.0)
