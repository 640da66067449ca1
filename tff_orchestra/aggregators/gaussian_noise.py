"""Gaussian differential-privacy noise with clipping and built-in accounting.

Every client's value is clipped to L2 norm `clip` (fixed, or adapted each round
towards a quantile of the clients' norms as in Andrew et al. 2021, "Differentially
private learning with adaptive clipping"), the clipped values are summed by the
inner factory, and Gaussian noise of std `noise_multiplier * clip` is added on
the server, after the inner sum (central DP: the server is trusted with the
sum). Noise added by the clients, so that the server never sees an un-noised
sum, is `DistributedDiscreteGaussian`: integer noise through a secure modular
sum, accounted as such. (An earlier `placement='distributed'` here added
continuous noise before a clipping, rounding secure sum: not the mechanism its
accounting assumed; it is refused.)

The guarantee is (epsilon, target_delta)-DP for the value this factory sees,
with the neighbouring relation and sampling of `sampling` (see
`privacy_accounting.py`): with `population`, Poisson sampling of
`q = expected_clients_per_round / population` (add/remove one client), or
`sampling='fixed_size'`, that many clients drawn without replacement, as
`tff-orchestra train` draws them (replace one client); without `population`, no
amplification. The caller must sample as stated: the factory cannot see it.
`epsilon_against_server` is the guarantee against the server, which draws the
clients and sees who took part: no amplification, every round assumed to
include the client, under the same relation. Inside a weighted `MeanFactory` that value is `weight * update`,
clipped after weighting, so its sensitivity stays `clip` whatever the weights;
but MeanFactory releases the *sum of weights* without noise, which is covered
by the guarantee only if the weights do not depend on client data (uniform
weighting). `chain` warns when it builds such a combination.

After every round the measurements report `epsilon` for `target_delta`, equal
to what `dp_accounting`'s RDP accountant gives for `factory.dp_event(state)`
under `factory.sampling.relation`. With `max_epsilon`, a round whose release
would take `epsilon` above it is not run: the server tells the clients so
before they send anything, the result is zeros, nothing is charged, and
`budget_exhausted` is True.

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

PLACEMENTS = ('central',)


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


class GaussianNoise(privacy_accounting.DifferentiallyPrivateStage, composition.ComposableFactory,
                    tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory`: clip, sum (inner factory), add Gaussian noise.

  State (`OrderedDict`): `clip` (the clip norm of the next round), `rounds`
  (rounds accounted so far), `inner_agg` (the inner factory's state)
  and `statistics_agg` (state of the factory summing the clipping statistics).

  Measurements (`OrderedDict`): `dp` (the inner factory's measurements),
  `clip`, `noise_stddev` (std of the noise the released sum carries; 0 in a
  round withheld by the budget),
  `clipped_fraction` (clients whose norm exceeded the clip; exact, so outside
  the DP guarantee unless `statistics_sum_factory` is itself private),
  `non_finite_clients` (clients whose value had a NaN or infinite coordinate,
  summed as zeros, `non_finite.py`; counted as the clipped fraction is),
  `epsilon` (amplified by the stated sampling), `epsilon_against_server`,
  `rounds` (rounds released and charged), `statistics` and, with
  `max_epsilon`, `budget_exhausted` (this round was withheld).
  """

  inner_kind = composition.UNWEIGHTED
  inner_output = composition.SUM
  def __init__(
      self,
      noise_multiplier: float,
      clip: ClipType,
      *,
      placement: str = 'central',
      expected_clients_per_round: Optional[int] = None,
      population: Optional[int] = None,
      sampling: str = privacy_accounting.POISSON,
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
      placement: `'central'`, the only placement (module docstring).
      expected_clients_per_round: Clients per round. Required for
        `output='mean'`, adaptive clipping and `population`.
      population: Number of clients sampled from; enables amplification by
        sampling in the accounting.
      sampling: How the caller draws `expected_clients_per_round` of
        `population` each round: `'poisson'` (each client independently with
        q = expected / population; add/remove one client) or `'fixed_size'`
        (exactly that many, without replacement; replace one client).
      target_delta: The delta of the reported epsilon, in (0, 1); below
        1 / population when that is given.
      max_epsilon: If set, a round that would take `epsilon` above it is
        withheld (nothing released, nothing charged, `budget_exhausted`).
      output: `'mean'` (default: the noisy sum over
        `expected_clients_per_round`, as TFF's DP factory) or `'sum'` (the
        noisy sum, for use as a `value_sum_factory`).
      inner_factory: Sums the clipped values; it must yield a sum. Default `tff.aggregators.SumFactory()`.
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
    if placement == 'distributed':
      raise ValueError(
          "GaussianNoise: placement='distributed' (continuous noise from each client, then clipped and rounded by "
          'a secure sum) is not the mechanism its accounting assumed; use DistributedDiscreteGaussian, whose '
          'integer noise and secure modular sum are accounted as run'
      )
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
    self._sampling = privacy_accounting.stated_sampling(sampling, population, expected_clients_per_round, target_delta)
    if max_epsilon is not None:
      _checks.check_number(max_epsilon, 'max_epsilon', low=0.0, low_inclusive=False)
    if inner_factory is not None:
      composition.check_inner(self, inner_factory)
    self._statistics_sum_factory = statistics_sum_factory or tff.aggregators.SumFactory()
    _checks.check_factory(self._statistics_sum_factory, 'statistics_sum_factory', weighted=False)

    self._noise_multiplier = float(noise_multiplier)
    self._clip = clip
    self._expected = expected_clients_per_round
    self._target_delta = float(target_delta)
    self._max_epsilon = max_epsilon
    self._count_stddev, self._value_noise_multiplier = _split_noise(noise_multiplier, clip, expected_clients_per_round)

  def default_inner_factory(self) -> tff.aggregators.UnweightedAggregationFactory:
    return tff.aggregators.SumFactory()

  @property
  def placement(self) -> str:
    return 'central'

  @property
  def value_noise_multiplier(self) -> float:
    """Noise multiplier of the value sum (below the total when clipping adapts)."""
    return self._value_noise_multiplier

  @property
  def sampling(self) -> privacy_accounting.Sampling:
    """The sampling the accounting assumes, and so its neighbouring relation (`sampling.relation`)."""
    return self._sampling

  @property
  def sampling_probability(self) -> Optional[float]:
    return self._sampling.probability

  def dp_event(self, state, *, against_server: bool = False) -> dp_accounting.DpEvent:
    """The `dp_accounting.DpEvent` of all rounds charged in `state`.

    `rounds` rounds at `noise_multiplier`, sampled as `sampling` says, or,
    `against_server`, without amplification; account it under `sampling.relation`.
    """
    return privacy_accounting.training_event(self._noise_multiplier, self._sampling, int(state['rounds']), against_server)

  def epsilon(self, state, *, against_server: bool = False, accountant: str = 'rdp') -> float:
    """Epsilon at `target_delta` after the rounds in `state` (Python side, dp_accounting).

    `accountant='pld'` uses dp_accounting's privacy-loss-distribution
    accountant (tighter; it has no event for `sampling='fixed_size'`).
    """
    return privacy_accounting.epsilon_of_event(
        self.dp_event(state, against_server=against_server), self._target_delta, self._sampling.relation, accountant
    )

  def epsilon_after(self, rounds: int, value_type: Optional[tff.Type] = None) -> float:
    """Epsilon (amplified as `sampling` says) after `rounds` released rounds; the value type does not matter."""
    del value_type
    return privacy_accounting.epsilon_python(self._noise_multiplier, self._sampling, rounds, self._target_delta)

  def rdp_curve(self, value_type: Optional[tff.Type] = None):
    """The unamplified RDP of one round as a function of the order, under `sampling.relation` (for `epsilon_of_stages`)."""
    del value_type
    z = self._noise_multiplier / (2.0 if self._sampling.relation == privacy_accounting.REPLACE_ONE else 1.0)
    return lambda order: order / (2.0 * z**2) if z > 0 else np.inf

  def noised_channel_type(self, value_type: tff.Type) -> tff.Type:
    """What the noised aggregation carries: the clipped values themselves (the noise is added after the sum)."""
    return value_type

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
    fits_budget, account = self._accountant()
    initial_clip = self._clip.initial_clip if isinstance(self._clip, AdaptiveClip) else float(self._clip)
    budgeted = self._max_epsilon is not None

    @tff.federated_computation()
    def init_fn():
      state = collections.OrderedDict(
          clip=tff.federated_value(np.float32(initial_clip), tff.SERVER),
          rounds=tff.federated_value(np.int64(0), tff.SERVER),
      )
      state['inner_agg'] = inner_process.initialize()
      state['statistics_agg'] = statistics_process.initialize()
      return tff.federated_zip(state)

    count_release = tff.tensorflow.computation(lambda rounds, release: rounds + tf.cast(release, tf.int64), np.int64, np.bool_)
    withheld = tff.tensorflow.computation(lambda release: tf.logical_not(release), np.bool_)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # 1. The server withholds a round that would exceed the budget, before clients send anything.
      release = tff.federated_map(fits_budget, state.rounds)
      # 2. Clients clip their values; 3. the inner factory sums them.
      clipped, statistics = tff.federated_map(
          clip_and_noise, (value, tff.federated_broadcast(state.clip), tff.federated_broadcast(release))
      )
      inner_output = inner_process.next(state.inner_agg, clipped)
      statistics_output = statistics_process.next(state.statistics_agg, statistics)
      # 4. The server adds the noise, averages if asked, and adapts the clip.
      result, next_clip, noise_stddev, clipped_fraction, non_finite_clients = tff.federated_map(
          finish, (inner_output.result, state.clip, statistics_output.result, release)
      )
      # 5. The accountant charges the round, if released.
      new_state = collections.OrderedDict(
          clip=next_clip, rounds=tff.federated_map(count_release, (state.rounds, release))
      )
      epsilon, epsilon_against_server = tff.federated_map(account, new_state['rounds'])
      new_state['inner_agg'] = inner_output.state
      new_state['statistics_agg'] = statistics_output.state
      measurements = collections.OrderedDict(
          dp=inner_output.measurements,
          clip=state.clip,
          noise_stddev=noise_stddev,
          clipped_fraction=clipped_fraction,
          non_finite_clients=non_finite_clients,
          epsilon=epsilon,
          epsilon_against_server=epsilon_against_server,
          rounds=new_state['rounds'],
          statistics=statistics_output.measurements,
      )
      if budgeted:
        measurements['budget_exhausted'] = tff.federated_map(withheld, release)
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

  def _client_clip_and_noise(self, value_type: tff.Type) -> tff.Computation:
    """(value, clip, released) -> (value clipped to L2 norm `clip`, statistics)."""
    adaptive = isinstance(self._clip, AdaptiveClip)

    @tff.tensorflow.computation(value_type, np.float32, np.bool_)
    def clip_and_noise(value, clip, release):
      # An excluded client sends zeros: below any clip.
      # In a round withheld by the budget every client sends zeros: no value, no statistics.
      value, excluded = non_finite.exclude_non_finite(value)
      value = tf.nest.map_structure(lambda x: tf.where(release, x, tf.zeros_like(x)), value)
      sends = tf.cast(release, tf.float32)
      norm = tf.linalg.global_norm([tf.cast(x, tf.float32) for x in tf.nest.flatten(value)])
      scale = tf.where(norm > 0.0, tf.minimum(1.0, tf.math.divide_no_nan(clip, norm)), 1.0)

      statistics = collections.OrderedDict(
          clipped=tf.cast(norm > clip, tf.float32),
          participants=sends,
          non_finite=tf.cast(excluded, tf.float32) * sends,
      )
      if adaptive:
        # Centred indicator as in tensorflow_privacy's quantile estimator; 0 for an
        # excluded client, which the estimator then counts as an absent one.
        below = tf.where(excluded, 0.0, tf.cast(norm <= clip, tf.float32) - 0.5)
        statistics['below_clip'] = below * sends
      return tf.nest.map_structure(lambda x: x * tf.cast(scale, x.dtype), value), statistics

    return clip_and_noise

  def _server_noise_and_next_clip(self, value_type: tff.Type, statistics_type: tff.Type) -> tff.Computation:
    """(sum, clip, statistics, released) -> (result, next clip, noise std, clipped fraction, non-finite clients).

    A withheld round (not released) yields zeros and keeps the clip.
    """
    value_nm, count_stddev = self._value_noise_multiplier, self._count_stddev
    expected = float(self._expected) if self._expected is not None else 1.0
    output_mean = self.output == composition.MEAN
    adaptive = self._clip if isinstance(self._clip, AdaptiveClip) else None
    value_specs = tff.types.type_to_tf_tensor_specs(value_type)

    @tff.tensorflow.computation(value_type, np.float32, statistics_type, np.bool_)
    def finish(summed, clip, statistics, release):
      participants = statistics['participants']
      noise_std = tf.where(release, tf.constant(value_nm, tf.float32) * clip, 0.0)
      summed = tf.nest.map_structure(
          lambda x: x + tf.random.normal(tf.shape(x), stddev=tf.cast(noise_std, x.dtype), dtype=x.dtype),
          summed,
      )
      if output_mean:
        summed = tf.nest.map_structure(lambda x: x / tf.cast(expected, x.dtype), summed)
      summed = tf.nest.map_structure(lambda x, spec: tf.cast(x, spec.dtype), summed, value_specs)
      if adaptive is not None:
        below = statistics['below_clip'] + tf.random.normal([], stddev=count_stddev)
        fraction_below = below / expected + 0.5
        adapted = clip * tf.exp(-adaptive.learning_rate * (fraction_below - adaptive.target_quantile))
        next_clip = tf.where(release, adapted, clip)
      else:
        next_clip = clip
      clipped_fraction = tf.math.divide_no_nan(statistics['clipped'], participants)
      non_finite_clients = tf.cast(tf.round(statistics['non_finite']), tf.int64)
      return summed, next_clip, noise_std, clipped_fraction, non_finite_clients

    return finish

  def _accountant(self) -> tuple[tff.Computation, tff.Computation]:
    """(fits_budget, account) on the count of charged rounds.

    `fits_budget`: would one more round keep epsilon within `max_epsilon`?
    `account`: rounds -> (epsilon, epsilon against the server). The RDP of a
    round is asked of dp_accounting here, once; the conversion to epsilon runs
    in the graph (`privacy_accounting`).
    """
    target_delta, max_epsilon, z = self._target_delta, self._max_epsilon, self._noise_multiplier
    rdp_rows = [privacy_accounting.rdp_per_round(z, self._sampling, view) for view in (False, True)]

    def epsilons(rounds):  # amplified, against the server
      return tuple(privacy_accounting.epsilon_in_graph(rdp, rounds, target_delta) for rdp in rdp_rows)

    def fits_budget(rounds):
      return tf.constant(True) if max_epsilon is None else epsilons(rounds + 1)[0] <= max_epsilon

    return tff.tensorflow.computation(fits_budget, np.int64), tff.tensorflow.computation(epsilons, np.int64)


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
