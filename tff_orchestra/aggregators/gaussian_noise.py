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
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
from typing import Optional, Union

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.aggregators import privacy_accounting

PLACEMENTS = ('central', 'distributed')
OUTPUTS = ('sum', 'mean')


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


class GaussianNoise(tff.aggregators.UnweightedAggregationFactory):
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
  `epsilon`, `rounds`, `statistics` and, with `max_epsilon`,
  `budget_exhausted`.
  """

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
      output: str = 'sum',
      inner_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
      statistics_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
  ):
    """Configures the factory.

    Args:
      noise_multiplier: Noise std as a multiple of the clip norm (>= 0; 0
        clips without noise, and epsilon is infinite).
      clip: A positive L2 clip norm, or `AdaptiveClip(...)`.
      placement: `'central'` or `'distributed'` (see the module docstring).
      expected_clients_per_round: Clients per round. Required for distributed
        noise, `output='mean'`, adaptive clipping and `population`.
      population: Number of clients sampled from; enables the Poisson sampling
        assumption in the accounting, with `q = expected / population`.
      target_delta: The delta of the reported epsilon, in (0, 1).
      max_epsilon: If set, `budget_exhausted` is reported each round.
      output: `'sum'` (default; fits `MeanFactory(value_sum_factory=...)`) or
        `'mean'` (the noisy sum over `expected_clients_per_round`).
      inner_factory: Sums the clipped (and, distributed, noised) values.
        Default `tff.aggregators.SumFactory()`.
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
    if output not in OUTPUTS:
      raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
    if expected_clients_per_round is not None:
      _checks.check_number(expected_clients_per_round, 'expected_clients_per_round', low=1, integer=True)
    for needs, name in (
        (placement == 'distributed', "placement='distributed'"),
        (output == 'mean', "output='mean'"),
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
    inner_factory = inner_factory or tff.aggregators.SumFactory()
    statistics_sum_factory = statistics_sum_factory or tff.aggregators.SumFactory()
    _checks.check_factory(inner_factory, 'inner_factory', weighted=False)
    _checks.check_factory(statistics_sum_factory, 'statistics_sum_factory', weighted=False)

    self._noise_multiplier = float(noise_multiplier)
    self._clip = clip
    self._placement = placement
    self._expected = expected_clients_per_round
    self._population = population
    self._target_delta = float(target_delta)
    self._max_epsilon = max_epsilon
    self._output = output
    self._inner_factory = inner_factory
    self._statistics_sum_factory = statistics_sum_factory

    if isinstance(clip, AdaptiveClip):
      count_stddev = clip.clipped_count_stddev
      if count_stddev is None:
        count_stddev = expected_clients_per_round / 20.0
      if 0 < noise_multiplier and noise_multiplier >= 2.0 * count_stddev:
        raise ValueError(
            f'noise_multiplier ({noise_multiplier}) must be below 2 * '
            f'clipped_count_stddev ({2.0 * count_stddev}): the clipped count '
            'would take all of the privacy budget'
        )
      self._count_stddev = count_stddev if noise_multiplier > 0 else 0.0
      self._value_noise_multiplier = (
          (noise_multiplier**-2 - (2.0 * count_stddev) ** -2) ** -0.5
          if noise_multiplier > 0
          else 0.0
      )
    else:
      self._count_stddev = 0.0
      self._value_noise_multiplier = float(noise_multiplier)

  # Read-only configuration, so users and `chain` can inspect a factory.
  @property
  def noise_multiplier(self) -> float:
    return self._noise_multiplier

  @property
  def output(self) -> str:
    """`'sum'` or `'mean'`: what the aggregate is."""
    return self._output

  @property
  def value_noise_multiplier(self) -> float:
    """Noise multiplier of the value sum (below the total when clipping adapts)."""
    return self._value_noise_multiplier

  @property
  def sampling_probability(self) -> Optional[float]:
    if self._population is None:
      return None
    return self._expected / self._population

  @property
  def inner_factory(self) -> tff.aggregators.UnweightedAggregationFactory:
    return self._inner_factory

  def with_inner(self, inner_factory: tff.aggregators.UnweightedAggregationFactory) -> 'GaussianNoise':
    """A copy of this factory with another inner factory (used by `chain`)."""
    _checks.check_factory(inner_factory, 'inner_factory', weighted=False)
    clone = copy.copy(self)
    clone._inner_factory = inner_factory  # pylint: disable=protected-access
    return clone

  def __repr__(self) -> str:
    return (
        f'GaussianNoise(noise_multiplier={self._noise_multiplier}, clip={self._clip!r}, '
        f'placement={self._placement!r}, inner_factory={self._inner_factory!r})'
    )

  def dp_event(self, state) -> dp_accounting.DpEvent:
    """The `dp_accounting.DpEvent` of all rounds recorded in `state`.

    Central noise: `rounds` Gaussian rounds at `noise_multiplier`. Distributed:
    for each m, `rounds_by_participants[m]` rounds at `noise_multiplier *
    sqrt(m / expected)`.
    """
    if self._placement == 'distributed':
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
    inner_process = self._inner_factory.create(value_type)
    adaptive = isinstance(self._clip, AdaptiveClip)
    initial_clip = self._clip.initial_clip if adaptive else float(self._clip)
    value_nm = self._value_noise_multiplier
    count_stddev = self._count_stddev
    distributed = self._placement == 'distributed'
    expected = float(self._expected) if self._expected is not None else 1.0
    # Distributed: each client's share, so `expected` shares sum to the full noise.
    share = 1.0 / math.sqrt(expected) if distributed else 0.0
    expected_clients = self._expected
    if distributed:
      rdp_table = privacy_accounting.rdp_by_participants(
          self._noise_multiplier, self.sampling_probability, expected_clients
      )
    else:
      rdp_one_round = privacy_accounting.rdp_per_round(self._noise_multiplier, self.sampling_probability)
    target_delta = self._target_delta
    max_epsilon = self._max_epsilon
    output_mean = self._output == 'mean'
    value_specs = tff.types.type_to_tf_tensor_specs(value_type)

    @tff.tensorflow.computation(value_type, np.float32)
    def clip_client_value(value, clip):
      flat = [tf.cast(x, tf.float32) for x in tf.nest.flatten(value)]
      norm = tf.linalg.global_norm(flat)
      scale = tf.minimum(1.0, tf.math.divide_no_nan(clip, norm))
      scale = tf.where(norm > 0.0, scale, 1.0)
      noise_std = value_nm * clip * share

      def clip_and_noise(x):
        clipped = x * tf.cast(scale, x.dtype)
        if distributed:
          clipped += tf.random.normal(tf.shape(x), stddev=tf.cast(noise_std, x.dtype), dtype=x.dtype)
        return clipped

      statistics = collections.OrderedDict(
          clipped=tf.cast(norm > clip, tf.float32),
          participants=tf.constant(1.0),
      )
      if adaptive:
        # Centred indicator as in tensorflow_privacy's quantile estimator.
        below = tf.cast(norm <= clip, tf.float32) - 0.5
        if distributed:
          below += tf.random.normal([], stddev=count_stddev * share)
        statistics['below_clip'] = below
      return tf.nest.map_structure(clip_and_noise, value), statistics

    statistics_type = clip_client_value.type_signature.result[1]
    statistics_process = self._statistics_sum_factory.create(statistics_type)

    @tff.tensorflow.computation(value_type, np.float32, statistics_type)
    def finish_on_server(summed, clip, statistics):
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
      if adaptive:
        below = statistics['below_clip']
        if not distributed:
          below += tf.random.normal([], stddev=count_stddev)
        fraction_below = below / expected + 0.5
        next_clip = clip * tf.exp(-self._clip.learning_rate * (fraction_below - self._clip.target_quantile))
      else:
        next_clip = clip
      clipped_fraction = tf.math.divide_no_nan(statistics['clipped'], participants)
      return summed, next_clip, noise_std, clipped_fraction

    def budget(epsilon):
      if max_epsilon is None:
        return epsilon, tf.constant(False)
      return epsilon, epsilon > max_epsilon

    if distributed:
      by_participants_type = tff.TensorType(np.int64, [expected_clients + 1])

      @tff.tensorflow.computation(by_participants_type, np.float32)
      def count_round(rounds_by_participants, participants):
        m = tf.clip_by_value(tf.cast(tf.round(participants), tf.int64), 0, expected_clients)
        return rounds_by_participants + tf.one_hot(m, expected_clients + 1, dtype=tf.int64)

      @tff.tensorflow.computation(by_participants_type)
      def account(rounds_by_participants):
        return budget(
            privacy_accounting.epsilon_by_participants_in_graph(rdp_table, rounds_by_participants, target_delta)
        )

    else:

      @tff.tensorflow.computation(np.int64)
      def account(rounds):
        return budget(privacy_accounting.epsilon_in_graph(rdp_one_round, rounds, target_delta))

    @tff.federated_computation()
    def init_fn():
      state = collections.OrderedDict(
          clip=tff.federated_value(np.float32(initial_clip), tff.SERVER),
          rounds=tff.federated_value(np.int64(0), tff.SERVER),
      )
      if distributed:
        state['rounds_by_participants'] = tff.federated_value(np.zeros(expected_clients + 1, np.int64), tff.SERVER)
      state['inner_agg'] = inner_process.initialize()
      state['statistics_agg'] = statistics_process.initialize()
      return tff.federated_zip(state)

    increment = tff.tensorflow.computation(lambda r: r + 1, np.int64)
    select_participants = tff.tensorflow.computation(lambda statistics: statistics['participants'], statistics_type)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      clip = state.clip
      clipped, statistics = tff.federated_map(clip_client_value, (value, tff.federated_broadcast(clip)))
      inner_output = inner_process.next(state.inner_agg, clipped)
      statistics_output = statistics_process.next(state.statistics_agg, statistics)
      result, next_clip, noise_stddev, clipped_fraction = tff.federated_map(
          finish_on_server, (inner_output.result, clip, statistics_output.result)
      )
      rounds = tff.federated_map(increment, state.rounds)
      if distributed:
        participants = tff.federated_map(select_participants, statistics_output.result)
        rounds_by_participants = tff.federated_map(count_round, (state.rounds_by_participants, participants))
        epsilon, exhausted = tff.federated_map(account, rounds_by_participants)
      else:
        epsilon, exhausted = tff.federated_map(account, rounds)
      measurements = collections.OrderedDict(
          dp=inner_output.measurements,
          clip=clip,
          noise_stddev=noise_stddev,
          clipped_fraction=clipped_fraction,
          epsilon=epsilon,
          rounds=rounds,
          statistics=statistics_output.measurements,
      )
      if max_epsilon is not None:
        measurements['budget_exhausted'] = exhausted
      new_state = collections.OrderedDict(clip=next_clip, rounds=rounds)
      if distributed:
        new_state['rounds_by_participants'] = rounds_by_participants
      new_state['inner_agg'] = inner_output.state
      new_state['statistics_agg'] = statistics_output.state
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(new_state), result, tff.federated_zip(measurements)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)
