"""Gaussian differential-privacy noise with clipping and built-in accounting.

Every client's value is clipped to L2 norm `clip` (fixed, or adapted each round
towards a quantile of the clients' norms as in Andrew et al. 2021, "Differentially
private learning with adaptive clipping"), the clipped values are summed by the
inner factory, and Gaussian noise of std `noise_multiplier * clip` is added:

* `placement='central'`: once, on the server, after the inner sum;
* `placement='distributed'`: each of the `expected_clients_per_round` clients
  adds noise of std `noise_multiplier * clip / sqrt(expected_clients_per_round)`
  before the inner sum, so the sum carries the full noise and the server never
  sees an un-noised sum. Pair it with a secure inner sum (`SecureFixedPointSum`).
  If m < expected clients take part, the sum carries less noise, noise
  multiplier `noise_multiplier * sqrt(m / expected)`: `noise_stddev` reports
  it, and the accountant charges each round at the noise it really had (the
  state counts rounds by participants; see `dp_event`).

The guarantee is (epsilon, target_delta)-DP with respect to adding or removing
one client's whole contribution, under the sampling assumption: Poisson
sampling with `q = expected_clients_per_round / population` when `population`
is given, no amplification by sampling otherwise. It holds for the value this
factory sees. Inside a weighted `MeanFactory` that value is `weight * update`,
clipped after weighting, so its sensitivity stays `clip` whatever the weights;
but MeanFactory releases the *sum of weights* without noise, which is covered
by the guarantee only if the weights do not depend on client data (uniform
weighting). `chain` warns when it builds such a combination.

After every round the measurements report `epsilon` for `target_delta`, equal
to what `dp_accounting`'s RDP accountant gives for `factory.dp_event(state)`.

Its result is the noisy sum over `expected_clients_per_round`, a mean, as TFF's
`DifferentiallyPrivateFactory.gaussian_fixed` yields (`output='mean'`, the
default), or the noisy sum itself (`output='sum'`), for a `value_sum_factory`
position; `chain` picks the sum there by itself.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import warnings
from typing import Optional, Union

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.runtime import contexts
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import non_finite
from tff_orchestra.aggregators import privacy_accounting

# Noise norm / largest signal norm above which `create` warns (see _warn_if_noise_swamps_the_signal).
NOISE_TO_SIGNAL_LIMIT = 3.0

PLACEMENTS = ('central', 'distributed')


@dataclasses.dataclass(frozen=True)
class AdaptiveClip:
  """Quantile-based adaptive clipping (Andrew et al. 2021).

  Each round the clip norm moves geometrically towards the `target_quantile`
  of the clients' update norms: `clip *= exp(-learning_rate * (b - q))`, where
  `b` is the noised fraction of clients whose norm was at most `clip`. The
  count of those clients gets Gaussian noise of std `clipped_count_stddev`
  (default: `expected_clients_per_round / 20`, as TFF's `gaussian_adaptive`),
  and part of the privacy budget goes to it, so the value noise multiplier is
  `(z**-2 - (2 * clipped_count_stddev)**-2) ** -0.5` for a total of `z`.
  """

  initial_clip: float = 0.1
  target_quantile: float = 0.5
  learning_rate: float = 0.2
  clipped_count_stddev: Optional[float] = None

  def __post_init__(self):
    _checks.check_number(self.initial_clip, 'AdaptiveClip.initial_clip', low=0.0, low_inclusive=False)
    _checks.check_number(self.target_quantile, 'AdaptiveClip.target_quantile', low=0.0, high=1.0)
    _checks.check_number(self.learning_rate, 'AdaptiveClip.learning_rate', low=0.0)
    if self.clipped_count_stddev is not None:
      _checks.check_number(
          self.clipped_count_stddev, 'AdaptiveClip.clipped_count_stddev', low=0.0, low_inclusive=False
      )


ClipType = Union[float, AdaptiveClip]


class GaussianNoise(composition.ComposableFactory, tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory`: clip, sum (inner factory), add Gaussian noise.

  State (`OrderedDict`): `clip` (the clip norm of the next round), `rounds`
  (rounds accounted so far), with distributed noise `rounds_by_participants`
  (int64 [expected + 1]: rounds in which m clients took part, more than
  expected counted at `expected`), `inner_agg` (the inner factory's state)
  and `statistics_agg` (state of the factory summing the clipping statistics).

  Measurements (`OrderedDict`): `dp` (the inner factory's measurements),
  `clip`, `noise_stddev` (std of the noise the released sum carries),
  `clipped_fraction` (clients whose norm exceeded the clip; exact, so outside
  the DP guarantee unless `statistics_sum_factory` is itself private),
  `non_finite_clients` (clients whose value had a NaN or infinite coordinate,
  summed as zeros, `non_finite.py`; counted as the clipped fraction is),
  `epsilon`, `rounds`, `statistics` and, with `max_epsilon`,
  `budget_exhausted`.
  """

  inner_kind = composition.UNWEIGHTED
  inner_output = composition.SUM
  differentially_private = True

  def __init__(
      self,
      noise_multiplier: float,
      clip: ClipType,
      *,
      placement: str = 'central',
      expected_clients_per_round: Optional[int] = None,
      population: Optional[int] = None,
      target_delta: float = 1e-5,
      max_epsilon: Optional[float] = None,
      output: str = composition.MEAN,
      inner_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
      statistics_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
  ):
    """Configures the factory.

    Args:
      noise_multiplier: Noise std as a multiple of the clip norm (>= 0; 0
        clips without noise, and epsilon is infinite).
      clip: A positive L2 clip norm, or `AdaptiveClip(...)`.
      placement: `'central'` or `'distributed'` (see the module docstring).
      expected_clients_per_round: Clients per round. Required for
        `output='mean'`, distributed noise, adaptive clipping and `population`.
      population: Number of clients sampled from; enables the Poisson sampling
        assumption in the accounting, with `q = expected / population`.
      target_delta: The delta of the reported epsilon, in (0, 1).
      max_epsilon: If set, `budget_exhausted` is reported each round.
      output: `'mean'` (default: the noisy sum over
        `expected_clients_per_round`, as TFF's DP factory) or `'sum'` (the
        noisy sum, for use as a `value_sum_factory`).
      inner_factory: Sums the clipped (and, distributed, noised) values; it
        must yield a sum. Default `tff.aggregators.SumFactory()`.
      statistics_sum_factory: Sums the per-client clipping statistics
        (clipped indicator, participation, adaptive-clip indicator). Default
        `tff.aggregators.SumFactory()`; pass a secure one to keep `next`
        free of unsecure aggregation.

    Raises:
      TypeError, ValueError: For arguments of the wrong type or range, or a
        combination that cannot give the stated guarantee.
    """
    _checks.check_number(noise_multiplier, 'noise_multiplier', low=0.0)
    if isinstance(clip, AdaptiveClip):
      if expected_clients_per_round is None:
        raise ValueError('clip=AdaptiveClip(...) needs expected_clients_per_round')
    else:
      _checks.check_number(clip, 'clip', low=0.0, low_inclusive=False)
    if placement not in PLACEMENTS:
      raise ValueError(f'placement must be one of {PLACEMENTS}, got {placement!r}')
    if output not in composition.OUTPUTS:
      raise ValueError(f'output must be one of {composition.OUTPUTS}, got {output!r}')
    if expected_clients_per_round is not None:
      _checks.check_number(expected_clients_per_round, 'expected_clients_per_round', low=1, integer=True)
    elif output == composition.MEAN:
      raise ValueError(
          "GaussianNoise: output='mean' (the default) divides the noisy sum by "
          'expected_clients_per_round, as TFF\'s DifferentiallyPrivateFactory divides by '
          "clients_per_round: pass expected_clients_per_round=N, or output='sum' where it is an inner sum"
      )
    for needs, name in (
        (placement == 'distributed', "placement='distributed'"),
        (population is not None, 'population'),
    ):
      if needs and expected_clients_per_round is None:
        raise ValueError(f'{name} needs expected_clients_per_round')
    if population is not None:
      _checks.check_number(population, 'population', low=1, integer=True)
      if population < expected_clients_per_round:
        raise ValueError(
            f'population ({population}) must be at least '
            f'expected_clients_per_round ({expected_clients_per_round})'
        )
    _checks.check_number(target_delta, 'target_delta', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    if max_epsilon is not None:
      _checks.check_number(max_epsilon, 'max_epsilon', low=0.0, low_inclusive=False)
    if inner_factory is not None:
      composition.check_inner(self, inner_factory)
    self._statistics_sum_factory = statistics_sum_factory or tff.aggregators.SumFactory()
    _checks.check_factory(self._statistics_sum_factory, 'statistics_sum_factory', weighted=False)

    self._noise_multiplier = float(noise_multiplier)
    self._clip = clip
    self._distributed = placement == 'distributed'
    self._expected = expected_clients_per_round
    self._population = population
    self._target_delta = float(target_delta)
    self._max_epsilon = max_epsilon
    self._count_stddev, self._value_noise_multiplier = _split_noise(noise_multiplier, clip, expected_clients_per_round)

  def default_inner_factory(self) -> tff.aggregators.UnweightedAggregationFactory:
    return tff.aggregators.SumFactory()

  @property
  def noise_multiplier(self) -> float:
    return self._noise_multiplier

  @property
  def placement(self) -> str:
    return 'distributed' if self._distributed else 'central'

  @property
  def target_delta(self) -> float:
    return self._target_delta

  @property
  def value_noise_multiplier(self) -> float:
    """Noise multiplier of the value sum (below the total when clipping adapts)."""
    return self._value_noise_multiplier

  @property
  def sampling_probability(self) -> Optional[float]:
    if self._population is None:
      return None
    return self._expected / self._population

  def dp_event(self, state) -> dp_accounting.DpEvent:
    """The `dp_accounting.DpEvent` of all rounds recorded in `state`.

    Central noise: `rounds` Gaussian rounds at `noise_multiplier`. Distributed:
    for each m, `rounds_by_participants[m]` rounds at `noise_multiplier *
    sqrt(m / expected)`.
    """
    if self._distributed:
      return privacy_accounting.distributed_training_event(
          self._noise_multiplier, self.sampling_probability, np.asarray(state['rounds_by_participants'])
      )
    return privacy_accounting.training_event(
        self._noise_multiplier, self.sampling_probability, int(state['rounds'])
    )

  def epsilon(self, state) -> float:
    """Epsilon at `target_delta` after the rounds in `state` (Python side, dp_accounting)."""
    return privacy_accounting.epsilon_of_event(self.dp_event(state), self._target_delta)

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'GaussianNoise')
    contexts.check_context('GaussianNoise', secure_sums=False)
    _checks.check_fully_defined(value_type, 'GaussianNoise')
    self._warn_if_noise_swamps_the_signal(value_type)
    inner_process = self.inner_factory.create(value_type)
    clip_and_noise = self._client_clip_and_noise(value_type)
    statistics_type = clip_and_noise.type_signature.result[1]
    statistics_process = self._statistics_sum_factory.create(statistics_type)
    finish = self._server_noise_and_next_clip(value_type, statistics_type)
    account = self._accountant()
    count_round = self._participant_counter(statistics_type) if self._distributed else None
    initial_clip = self._clip.initial_clip if isinstance(self._clip, AdaptiveClip) else float(self._clip)
    expected = self._expected

    @tff.federated_computation()
    def init_fn():
      state = collections.OrderedDict(
          clip=tff.federated_value(np.float32(initial_clip), tff.SERVER),
          rounds=tff.federated_value(np.int64(0), tff.SERVER),
      )
      if count_round is not None:
        state['rounds_by_participants'] = tff.federated_value(np.zeros(expected + 1, np.int64), tff.SERVER)
      state['inner_agg'] = inner_process.initialize()
      state['statistics_agg'] = statistics_process.initialize()
      return tff.federated_zip(state)

    increment = tff.tensorflow.computation(lambda r: r + 1, np.int64)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # 1. Clients clip (and, distributed, noise) their values; 2. the inner factory sums them.
      clipped, statistics = tff.federated_map(clip_and_noise, (value, tff.federated_broadcast(state.clip)))
      inner_output = inner_process.next(state.inner_agg, clipped)
      statistics_output = statistics_process.next(state.statistics_agg, statistics)
      # 3. The server adds central noise, averages if asked, and adapts the clip.
      result, next_clip, noise_stddev, clipped_fraction, non_finite_clients = tff.federated_map(
          finish, (inner_output.result, state.clip, statistics_output.result)
      )
      # 4. The accountant charges the round.
      new_state = collections.OrderedDict(clip=next_clip, rounds=tff.federated_map(increment, state.rounds))
      if count_round is not None:
        new_state['rounds_by_participants'] = tff.federated_map(
            count_round, (state.rounds_by_participants, statistics_output.result)
        )
        epsilon, exhausted = tff.federated_map(account, new_state['rounds_by_participants'])
      else:
        epsilon, exhausted = tff.federated_map(account, new_state['rounds'])
      new_state['inner_agg'] = inner_output.state
      new_state['statistics_agg'] = statistics_output.state
      measurements = collections.OrderedDict(
          dp=inner_output.measurements,
          clip=state.clip,
          noise_stddev=noise_stddev,
          clipped_fraction=clipped_fraction,
          non_finite_clients=non_finite_clients,
          epsilon=epsilon,
          rounds=new_state['rounds'],
          statistics=statistics_output.measurements,
      )
      if self._max_epsilon is not None:
        measurements['budget_exhausted'] = exhausted
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(new_state), result, tff.federated_zip(measurements)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _warn_if_noise_swamps_the_signal(self, value_type: tff.Type) -> None:
    """Warns (once per create) when the noise's norm is many times the largest the summed signal can have.

    The sum of m clipped values has norm at most m * clip; the noise's norm is
    about z * clip * sqrt(d) for d coordinates. Measured with Orchestra on digits
    (benchmarks/results/privacy_utility.json, d = 850,244, m = 10): a ratio
    z * sqrt(d) / m of 0.92 trained as well as no noise, 9.2 worse than no
    training at all.
    """
    if self._expected is None or not self._noise_multiplier > 0:
      return
    size = sum(spec.shape.num_elements() for spec in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)))
    ratio = self._noise_multiplier * math.sqrt(size) / self._expected
    if ratio > NOISE_TO_SIGNAL_LIMIT:
      warnings.warn(
          f'GaussianNoise: the noise has about {ratio:.3g} times the norm of the largest possible signal '
          f'(noise_multiplier {self._noise_multiplier:g} x sqrt({size} coordinates) / {self._expected} clients); '
          f'expect little or no learning (on digits, 9.2 trained worse than no training): lower noise_multiplier '
          'or take more clients per round',
          UserWarning,
          stacklevel=3,
      )

  def _noise_share(self) -> float:
    """The fraction of the noise std each client adds: 1/sqrt(expected) if distributed, else 0."""
    return 1.0 / math.sqrt(self._expected) if self._distributed else 0.0

  def _client_clip_and_noise(self, value_type: tff.Type) -> tff.Computation:
    """(value, clip) -> (value clipped to L2 norm `clip` [+ noise share], statistics)."""
    value_nm, count_stddev = self._value_noise_multiplier, self._count_stddev
    distributed, adaptive, share = self._distributed, isinstance(self._clip, AdaptiveClip), self._noise_share()

    @tff.tensorflow.computation(value_type, np.float32)
    def clip_and_noise(value, clip):
      # An excluded client sends zeros (and, distributed, its noise share): below any clip.
      value, excluded = non_finite.exclude_non_finite(value)
      norm = tf.linalg.global_norm([tf.cast(x, tf.float32) for x in tf.nest.flatten(value)])
      scale = tf.where(norm > 0.0, tf.minimum(1.0, tf.math.divide_no_nan(clip, norm)), 1.0)
      noise_std = value_nm * clip * share

      def clip_leaf(x):
        clipped = x * tf.cast(scale, x.dtype)
        if distributed:
          clipped += tf.random.normal(tf.shape(x), stddev=tf.cast(noise_std, x.dtype), dtype=x.dtype)
        return clipped

      statistics = collections.OrderedDict(
          clipped=tf.cast(norm > clip, tf.float32),
          participants=tf.constant(1.0),
          non_finite=tf.cast(excluded, tf.float32),
      )
      if adaptive:
        # Centred indicator as in tensorflow_privacy's quantile estimator; 0 for an
        # excluded client, which the estimator then counts as an absent one.
        below = tf.where(excluded, 0.0, tf.cast(norm <= clip, tf.float32) - 0.5)
        if distributed:
          below += tf.random.normal([], stddev=count_stddev * share)
        statistics['below_clip'] = below
      return tf.nest.map_structure(clip_leaf, value), statistics

    return clip_and_noise

  def _server_noise_and_next_clip(self, value_type: tff.Type, statistics_type: tff.Type) -> tff.Computation:
    """(sum, clip, statistics) -> (result, next clip, noise std, clipped fraction, non-finite clients)."""
    value_nm, count_stddev, distributed = self._value_noise_multiplier, self._count_stddev, self._distributed
    expected = float(self._expected) if self._expected is not None else 1.0
    output_mean = self.output == composition.MEAN
    adaptive = self._clip if isinstance(self._clip, AdaptiveClip) else None
    value_specs = tff.types.type_to_tf_tensor_specs(value_type)

    @tff.tensorflow.computation(value_type, np.float32, statistics_type)
    def finish(summed, clip, statistics):
      participants = statistics['participants']
      if distributed:
        noise_std = value_nm * clip * tf.sqrt(participants / expected)
      else:
        noise_std = tf.constant(value_nm, tf.float32) * clip
        summed = tf.nest.map_structure(
            lambda x: x + tf.random.normal(tf.shape(x), stddev=tf.cast(noise_std, x.dtype), dtype=x.dtype),
            summed,
        )
      if output_mean:
        summed = tf.nest.map_structure(lambda x: x / tf.cast(expected, x.dtype), summed)
      summed = tf.nest.map_structure(lambda x, spec: tf.cast(x, spec.dtype), summed, value_specs)
      if adaptive is not None:
        below = statistics['below_clip']
        if not distributed:
          below += tf.random.normal([], stddev=count_stddev)
        fraction_below = below / expected + 0.5
        next_clip = clip * tf.exp(-adaptive.learning_rate * (fraction_below - adaptive.target_quantile))
      else:
        next_clip = clip
      clipped_fraction = tf.math.divide_no_nan(statistics['clipped'], participants)
      non_finite_clients = tf.cast(tf.round(statistics['non_finite']), tf.int64)
      return summed, next_clip, noise_std, clipped_fraction, non_finite_clients

    return finish

  def _accountant(self) -> tff.Computation:
    """Accounting state (rounds, or rounds by participants) -> (epsilon, budget exhausted).

    The RDP of a round is asked of dp_accounting here, once; the conversion
    to epsilon runs in the graph (`privacy_accounting`).
    """
    target_delta, max_epsilon = self._target_delta, self._max_epsilon

    def with_budget(epsilon):
      return epsilon, (tf.constant(False) if max_epsilon is None else epsilon > max_epsilon)

    if self._distributed:
      rdp_table = privacy_accounting.rdp_by_participants(
          self._noise_multiplier, self.sampling_probability, self._expected
      )
      return tff.tensorflow.computation(
          lambda by_participants: with_budget(
              privacy_accounting.epsilon_by_participants_in_graph(rdp_table, by_participants, target_delta)
          ),
          tff.TensorType(np.int64, [self._expected + 1]),
      )
    rdp_one_round = privacy_accounting.rdp_per_round(self._noise_multiplier, self.sampling_probability)
    return tff.tensorflow.computation(
        lambda rounds: with_budget(privacy_accounting.epsilon_in_graph(rdp_one_round, rounds, target_delta)),
        np.int64,
    )

  def _participant_counter(self, statistics_type: tff.Type) -> tff.Computation:
    """(rounds by participants, statistics) -> the counts with this round's m added (m capped at expected)."""
    expected = self._expected

    @tff.tensorflow.computation(tff.TensorType(np.int64, [expected + 1]), statistics_type)
    def count_round(rounds_by_participants, statistics):
      m = tf.clip_by_value(tf.cast(tf.round(statistics['participants']), tf.int64), 0, expected)
      return rounds_by_participants + tf.one_hot(m, expected + 1, dtype=tf.int64)

    return count_round


def _split_noise(noise_multiplier: float, clip: ClipType, expected: Optional[int]) -> tuple[float, float]:
  """(std of the clipped-count noise, value noise multiplier) for a total of `noise_multiplier`.

  With adaptive clipping part of the budget goes to the count:
  `z_value = (z**-2 - (2 * count_std)**-2) ** -0.5`, as TFF's `gaussian_adaptive`.
  """
  if not isinstance(clip, AdaptiveClip):
    return 0.0, float(noise_multiplier)
  count_stddev = clip.clipped_count_stddev if clip.clipped_count_stddev is not None else expected / 20.0
  if noise_multiplier == 0:
    return 0.0, 0.0
  if noise_multiplier >= 2.0 * count_stddev:
    raise ValueError(
        f'noise_multiplier ({noise_multiplier}) must be below 2 * clipped_count_stddev '
        f'({2.0 * count_stddev}): the clipped count would take all of the privacy budget'
    )
  return count_stddev, (noise_multiplier**-2 - (2.0 * count_stddev) ** -2) ** -0.5
