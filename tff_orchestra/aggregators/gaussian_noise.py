"""Gaussian differential-privacy noise, run on integers: L2 clipping, a grid, exact discrete noise, accounting.

A round, in the order it runs:

1. The server withholds a round that would take `epsilon` above `max_epsilon`,
   before any client sends anything (the result is zeros, nothing charged).
2. Each client clips its value to L2 norm `clip` (fixed, or adapted each round
   towards a quantile of the clients' norms as in Andrew et al. 2021,
   "Differentially private learning with adaptive clipping"), scales it onto
   a grid of `clip / clip_steps` and rounds it to integers by conditional
   randomized rounding, whose squared-norm bound is checked in int64
   (`integer_grid.py`). With adaptive clipping it appends one more integer,
   +h or -h: whether its norm was at most the clip.
3. `inner_factory` sums the integer vectors (default
   `tff.aggregators.SumFactory()`; `secure_integer_sum()`, TFF's
   `SecureSumFactory` on integers, hides each vector from the server,
   which is trusted with the sum here: central DP).
4. The server adds discrete Gaussian noise, drawn exactly in integer
   arithmetic (`discrete_gaussian.py`), to every summed integer, and only then
   turns them back into values (and the count into the next clip).

Why integers: float noise added to a float sum, as TFF's
`DifferentiallyPrivateFactory` does, leaks through the low-order bits of the
result (Mironov 2012: for inputs 0 and 1, float32 outputs in (0, 0.5) land off
a grid with probability 0.126 against 0, whatever epsilon says). Here every
released number is a function of a noisy integer, so the accounting is of what
runs.

The grid has `clip_steps = max(2047 / z, 5 sqrt(d))` steps per clip norm, for
the value noise multiplier z and d coordinates (5 sqrt(d) keeps the rounding's
increase of the sensitivity near 1%; without noise, 2**30 steps); the noise is the sum of `draws` discrete
Gaussians of integer `variance` (one draw holds at most 2047 grid steps of
standard deviation, `discrete_gaussian.MAX_VARIANCE`), at least `z * clip`.
Adaptive clipping splits the budget as TFF's `gaussian_adaptive` does: the
count gets noise of std `clipped_count_stddev`, the value the noise multiplier
`(z**-2 - (2 * clipped_count_stddev)**-2) ** -0.5`.

**Guarantee** (`epsilon`): (epsilon, target_delta)-DP of everything this factory
releases (the result and the next clip), for the value it sees, under the
relation and sampling of `sampling` (`privacy_accounting.Sampling`): with
`population`, Poisson sampling of `q = expected_clients_per_round / population`
(add/remove one client), or `sampling='fixed_size'`, that many drawn without
replacement, as `tff-orchestra train` draws them (replace one client, twice
the sensitivity); without `population`, no amplification. The caller must
sample as stated: the factory cannot see it. The RDP of a round is
Proposition 14 of Kairouz, Liu and Steinke 2021 for the `draws` discrete
Gaussians at the rounded vectors' sensitivity (one draw: exactly the
Gaussian's RDP, Canonne, Kamath and Steinke 2020), plus the count's discrete
Gaussian; amplification by sampling uses bounds valid for any mechanism with
that RDP (`privacy_accounting.amplified_rdp`), a little looser than
dp_accounting's events for the real-valued Gaussian. `epsilon_against_server`
is the guarantee against the server, which draws the clients and sees who took
part: no amplification, under the same relation. The sampler's range
truncation adds under 1e-54000 per coordinate to delta. Inside a weighted
`MeanFactory` the value is `weight * update`, clipped after weighting, but the
`MeanFactory` releases the sum of weights without noise (covered only for
uniform weights; `chain` warns, `FixedWeightSum` sends none).

Outside the guarantee, and in the measurements only with `report_clipping`
(the default): the exact fraction of clients clipped and of non-finite
values, summed by `statistics_sum_factory` (pass a DP one to cover them).

Its result is the noisy sum over `expected_clients_per_round`, a mean, as
TFF's `DifferentiallyPrivateFactory.gaussian_fixed` yields (`output='mean'`,
the default), or the noisy sum (`output='sum'`), for a `value_sum_factory`
position; `chain` picks the sum there by itself.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import warnings
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.runtime import contexts
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import discrete_gaussian
from tff_orchestra.aggregators import integer_grid
from tff_orchestra.aggregators import non_finite
from tff_orchestra.aggregators import privacy_accounting

# Noise norm / largest signal norm above which `create` warns (see _warn_if_noise_swamps_the_signal).
NOISE_TO_SIGNAL_LIMIT = 3.0
STEPS_PER_NOISE_STD = math.isqrt(discrete_gaussian.MAX_VARIANCE) - 1  # 2047: one draw's largest std
ROUNDING_STEPS_PER_ROOT_DIMENSION = 5.0  # clip >= 5 sqrt(d) grid steps: rounding adds <= ~1% to the sensitivity
NOISELESS_CLIP_STEPS = 2**30  # without noise, the finest grid whose sums and squared norms stay within int64

PLACEMENTS = ('central',)
# No client's integer coordinate reaches this unless noise_multiplier < 1e-6 (each is at most clip_steps + 1).
SECURE_INTEGER_BOUND = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class AdaptiveClip:
  """Quantile-based adaptive clipping (Andrew et al. 2021).

  Each round the clip norm moves geometrically towards the `target_quantile`
  of the clients' update norms: `clip *= exp(-learning_rate * (b - q))`, where
  `b` is the noised fraction of clients whose norm was at most `clip`. The
  count of those clients gets discrete Gaussian noise of std
  `clipped_count_stddev` (default: `expected_clients_per_round / 20`, as TFF's
  `gaussian_adaptive`), and part of the privacy budget goes to it, so the
  value noise multiplier is `(z**-2 - (2 * clipped_count_stddev)**-2) ** -0.5`
  for a total of `z`.
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


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The integer mechanism for one value size: what runs, and what is accounted."""

  dimension: int
  clip_steps: float  # grid steps per clip norm: grid_step = clip / clip_steps
  variance: int  # of each discrete Gaussian draw on the value, in squared grid steps (0: no noise)
  draws: int
  l2_bound_squared: int  # a client's rounded vector's squared norm is at most this
  count_step: int  # h: a client adds +h or -h to the adaptive clip's count (0: fixed clip)
  count_variance: int
  count_draws: int
  rdp_per_round: np.ndarray  # amplified as the sampling says
  rdp_against_server: np.ndarray

  @property
  def noise_steps(self) -> float:
    """The value noise's standard deviation in grid steps."""
    return math.sqrt(self.draws * self.variance)

  @property
  def channel_size(self) -> int:
    """Integers a client sends: the value's, and the count's with adaptive clipping."""
    return self.dimension + (1 if self.count_step else 0)


def secure_integer_sum(bound: int = SECURE_INTEGER_BOUND) -> tff.aggregators.SecureSumFactory:
  """TFF's secure sum of integers in [-bound, bound]: `GaussianNoise`'s inner factory when the server may see only the sum.

  The default bound is above any coordinate a client's grid vector has (for
  `noise_multiplier` >= 1e-6), so nothing is clipped; a coordinate beyond
  `bound` would be clipped to it, which moves no client's vector further
  from another's, so it costs accuracy, never privacy.
  """
  _checks.check_number(bound, 'bound', low=1, integer=True)
  return tff.aggregators.SecureSumFactory(int(bound), -int(bound))


def _draws_for(stddev: float) -> tuple[int, int]:
  """(variance, draws): the fewest discrete Gaussian draws of integer variance whose sum has at least `stddev`."""
  if not stddev > 0:
    return 0, 1
  draws = max(1, math.ceil(stddev**2 / discrete_gaussian.MAX_VARIANCE))
  return math.ceil(stddev**2 / draws), draws


def _discrete_noise(variance: int, draws: int, size: int, seed: tf.Tensor) -> tf.Tensor:
  """The sum of `draws` discrete Gaussians of `variance` for each of `size` int64 coordinates (zeros for variance 0)."""
  if variance == 0:
    return tf.zeros([size], tf.int64)
  return tf.add_n([
      discrete_gaussian.sample_discrete_gaussian(variance, size, discrete_gaussian.fold_seed(seed, draw))
      for draw in range(draws)
  ])


class GaussianNoise(privacy_accounting.DifferentiallyPrivateStage, composition.ComposableFactory,
                    tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory`: clip, round onto a grid, sum (inner factory), add discrete Gaussian noise.

  State (`OrderedDict`): `clip` (the clip norm of the next round), `rounds`
  (rounds released and charged), `inner_agg` (the inner factory's state) and,
  with `report_clipping`, `statistics_agg`.

  Measurements (`OrderedDict`): `dp` (the inner factory's measurements),
  `clip`, `grid_step`, `noise_stddev` (std of the noise the released sum
  carries, in value units; 0 in a round withheld by the budget), with
  `report_clipping` `clipped_fraction` and `non_finite_clients` (exact:
  outside the guarantee unless `statistics_sum_factory` is private; a
  non-finite value is sent as zeros), `epsilon` (amplified by the stated
  sampling), `epsilon_against_server`, `rounds`, with `report_clipping`
  `statistics`, and with `max_epsilon` `budget_exhausted`.
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
      beta: float = math.exp(-0.5),
      report_clipping: bool = True,
      output: str = composition.MEAN,
      inner_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
      statistics_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
  ):
    """Configures the factory.

    Args:
      noise_multiplier: Noise std as a multiple of the clip norm (>= 0; 0
        clips and rounds without noise, and epsilon is infinite).
      clip: A positive L2 clip norm, or `AdaptiveClip(...)`.
      placement: `'central'`, the only placement (noise from the clients is
        `DistributedDiscreteGaussian`).
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
      beta: Conditional rounding parameter in [0, 1) (`integer_grid`): 0
        bounds the rounded norm by the worst case, larger values by a
        tighter bound that a rounding meets with probability >= 1 - beta
        (it is redrawn until it does).
      report_clipping: Send and report the clipping statistics (outside the
        guarantee unless `statistics_sum_factory` is private).
      output: `'mean'` (default: the noisy sum over
        `expected_clients_per_round`, as TFF's DP factory) or `'sum'` (the
        noisy sum, for use as a `value_sum_factory`).
      inner_factory: Sums the clients' int64 vectors; it must yield the sum.
        Default `tff.aggregators.SumFactory()`; `secure_integer_sum()` for
        secure aggregation.
      statistics_sum_factory: Sums the per-client clipping statistics.
        Default `tff.aggregators.SumFactory()`.

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
    _checks.check_number(beta, 'beta', low=0.0, high=1.0, high_inclusive=False)
    if not isinstance(report_clipping, bool):
      raise TypeError(f'report_clipping must be a bool, got {report_clipping!r}')
    if inner_factory is not None:
      composition.check_inner(self, inner_factory)
    self._statistics_sum_factory = statistics_sum_factory or tff.aggregators.SumFactory()
    _checks.check_factory(self._statistics_sum_factory, 'statistics_sum_factory', weighted=False)

    self._noise_multiplier = float(noise_multiplier)
    self._clip = clip
    self._expected = expected_clients_per_round
    self._target_delta = float(target_delta)
    self._max_epsilon = max_epsilon
    self._beta = float(beta)
    self._report_clipping = report_clipping
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

  def calibrate(self, value_type: tff.Type) -> Calibration:
    """The grid, the noise and the per-round RDP for values of `value_type`."""
    dimension = integer_grid.size_of(value_type)
    z = self._value_noise_multiplier
    clip_steps = max(STEPS_PER_NOISE_STD / z if z > 0 else NOISELESS_CLIP_STEPS,
                     ROUNDING_STEPS_PER_ROOT_DIMENSION * math.sqrt(dimension))
    if (clip_steps + math.sqrt(dimension)) ** 2 >= integer_grid.MAX_SQUARED_NORM:
      raise ValueError(
          f'GaussianNoise: a grid of {clip_steps:.3g} steps per clip over {dimension} coordinates (noise_multiplier '
          f'{self._noise_multiplier:g}) is too fine for the int64 norm check: raise noise_multiplier or use fewer coordinates'
      )
    variance, draws = _draws_for(z * clip_steps)
    l2_bound_squared = math.floor(integer_grid.rounded_squared_norm_bound(clip_steps, self._beta, dimension))
    count_step, count_variance, count_draws = 0, 0, 1
    if isinstance(self._clip, AdaptiveClip):
      # The count's noise std in steps of h is 2 * count_stddev * h (the +-h indicator has sensitivity h).
      count_step = max(1, math.floor(STEPS_PER_NOISE_STD / (2.0 * self._count_stddev))) if self._count_stddev else 1
      count_variance, count_draws = _draws_for(2.0 * self._count_stddev * count_step)
    rdp_of_order = self._rdp_of_order(dimension, variance, draws, l2_bound_squared, count_step, count_variance,
                                      count_draws)
    unamplified = privacy_accounting.amplified_rdp(rdp_of_order, privacy_accounting.Sampling())
    return Calibration(
        dimension, clip_steps, variance, draws, l2_bound_squared, count_step, count_variance, count_draws,
        privacy_accounting.amplified_rdp(rdp_of_order, self._sampling), unamplified,
    )

  def _rdp_of_order(self, dimension, variance, draws, l2_bound_squared, count_step, count_variance, count_draws):
    """The unamplified RDP of one round, under `sampling.relation`: the value's noise and the count's, composed."""
    factor = 2.0 if self._sampling.relation == privacy_accounting.REPLACE_ONE else 1.0
    value_sensitivity = factor * math.sqrt(l2_bound_squared)

    def rdp_of_order(order):
      rdp = privacy_accounting.discrete_gaussian_sum_rdp([order], value_sensitivity, variance, draws, dimension)[0]
      if count_step:
        rdp += privacy_accounting.discrete_gaussian_sum_rdp([order], factor * count_step, count_variance, count_draws, 1)[0]
      return float(rdp)

    return rdp_of_order

  def rdp_curve(self, value_type: tff.Type):
    """The unamplified RDP of one round as a function of the order, under `sampling.relation` (for `epsilon_of_stages`)."""
    c = self.calibrate(value_type)
    return self._rdp_of_order(c.dimension, c.variance, c.draws, c.l2_bound_squared, c.count_step, c.count_variance,
                              c.count_draws)

  def epsilon_after(self, rounds: int, value_type: tff.Type, *, against_server: bool = False) -> float:
    """Epsilon at `target_delta` after `rounds` released rounds on values of `value_type` (Python side)."""
    calibration = self.calibrate(value_type)
    rdp = calibration.rdp_against_server if against_server else calibration.rdp_per_round
    return float(privacy_accounting.epsilon_in_graph(rdp, tf.constant(rounds, tf.int64), self._target_delta))

  def noised_channel_type(self, value_type: tff.Type) -> tff.Type:
    """What the noised aggregation carries: the clients' integer vectors."""
    return tff.TensorType(np.int64, [self.calibrate(value_type).channel_size])

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'GaussianNoise')
    contexts.check_context('GaussianNoise', secure_sums=False)
    _checks.check_fully_defined(value_type, 'GaussianNoise')
    self._warn_if_noise_swamps_the_signal(value_type)
    calibration = self.calibrate(value_type)
    inner_process = self._create_inner(value_type)
    encode = self._client_clip_and_round(value_type, calibration)
    statistics_process = self._statistics_sum_factory.create(encode.type_signature.result[1])
    draw_noise = self._server_noise(calibration)
    finish = self._server_release_and_next_clip(value_type, calibration)
    clipping_fractions = tff.tensorflow.computation(_clipping_fractions, encode.type_signature.result[1])
    fits_budget, account = self._accountant(calibration)
    initial_clip = self._clip.initial_clip if isinstance(self._clip, AdaptiveClip) else float(self._clip)
    budgeted, report_clipping = self._max_epsilon is not None, self._report_clipping
    charge = tff.tensorflow.computation(lambda rounds, released: rounds + tf.cast(released, tf.int64), np.int64, np.bool_)
    withheld = tff.tensorflow.computation(lambda released: tf.logical_not(released), np.bool_)

    @tff.federated_computation()
    def init_fn():
      state = collections.OrderedDict(
          clip=tff.federated_value(np.float32(initial_clip), tff.SERVER),
          rounds=tff.federated_value(np.int64(0), tff.SERVER),
          inner_agg=inner_process.initialize(),
      )
      if report_clipping:
        state['statistics_agg'] = statistics_process.initialize()
      return tff.federated_zip(state)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # 1. The server withholds a round that would exceed the budget, before clients send anything.
      released = tff.federated_map(fits_budget, state.rounds)
      # The server draws the round's noise, which needs nothing from the clients, while they work.
      noise = tff.federated_eval(draw_noise, tff.SERVER)
      # 2. Clients clip and round onto the grid; 3. the inner factory sums the integers.
      integers, statistics = tff.federated_map(
          encode, (value, tff.federated_broadcast(state.clip), tff.federated_broadcast(released))
      )
      inner_output = inner_process.next(state.inner_agg, integers)
      # 4. The server adds the discrete noise, turns integers into values, adapts the clip.
      result, next_clip, grid_step, noise_stddev = tff.federated_map(
          finish, (inner_output.result, noise, state.clip, released)
      )
      # 5. The accountant charges the round, if released.
      rounds = tff.federated_map(charge, (state.rounds, released))
      epsilon, epsilon_against_server = tff.federated_map(account, rounds)
      new_state = collections.OrderedDict(clip=next_clip, rounds=rounds, inner_agg=inner_output.state)
      measurements = collections.OrderedDict(
          dp=inner_output.measurements, clip=state.clip, grid_step=grid_step, noise_stddev=noise_stddev
      )
      if report_clipping:
        statistics_output = statistics_process.next(state.statistics_agg, statistics)
        new_state['statistics_agg'] = statistics_output.state
        measurements['clipped_fraction'], measurements['non_finite_clients'] = tff.federated_map(
            clipping_fractions, statistics_output.result
        )
      measurements.update(epsilon=epsilon, epsilon_against_server=epsilon_against_server, rounds=rounds)
      if report_clipping:
        measurements['statistics'] = statistics_output.measurements
      if budgeted:
        measurements['budget_exhausted'] = tff.federated_map(withheld, released)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(new_state), result, tff.federated_zip(measurements)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _create_inner(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    """The inner factory's process on the int64 vectors, or a TypeError naming what it must sum."""
    channel = self.noised_channel_type(value_type)
    try:
      return self.inner_factory.create(channel)
    except (TypeError, ValueError) as error:
      raise TypeError(
          f'GaussianNoise: inner_factory {composition.describe(self.inner_factory)} must sum the clients\' '
          f'integer vectors ({channel}), e.g. tff.aggregators.SumFactory() or, secure, '
          f'aggregators.secure_integer_sum(); it failed with: {error}'
      ) from error

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
    size = integer_grid.size_of(value_type)
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

  def _client_clip_and_round(self, value_type: tff.Type, calibration: Calibration) -> tff.Computation:
    """(value, clip, released) -> (int64 vector: the clipped value on the grid [, the count's +-h], statistics)."""
    dimension, clip_steps, bound = calibration.dimension, calibration.clip_steps, calibration.l2_bound_squared
    count_step = calibration.count_step

    @tff.tensorflow.computation(value_type, np.float32, np.bool_)
    def clip_and_round(value, clip, released):
      # A non-finite value is sent as zeros; in a withheld round every client sends zeros.
      value, excluded = non_finite.exclude_non_finite(value)
      clip = tf.cast(clip, tf.float64)
      flat, norm = integer_grid.l2_clip(integer_grid.flatten(value, dimension), clip)
      integers = integer_grid.conditional_round(flat * (clip_steps / clip), bound, discrete_gaussian.fresh_seed())
      if count_step:
        # +h for a norm within the clip, -h above it, 0 for an excluded client (as if absent).
        below = tf.where(excluded, 0, tf.where(norm <= clip, count_step, -count_step))
        integers = tf.concat([integers, tf.reshape(tf.cast(below, tf.int64), [1])], axis=0)
      sends = tf.cast(released, tf.float32)
      statistics = collections.OrderedDict(
          clipped=tf.cast(norm > clip, tf.float32) * sends,
          participants=sends,
          non_finite=tf.cast(excluded, tf.float32) * sends,
      )
      return tf.where(released, integers, tf.zeros_like(integers)), statistics

    return clip_and_round

  def _server_noise(self, calibration: Calibration) -> tff.Computation:
    """() -> the discrete noise of one round, one int64 per channel coordinate (the value's, then the count's).

    It needs nothing from the clients, so the runtime can draw it while they
    encode (TFF runs independent calls concurrently).
    """
    c = calibration

    @tff.tensorflow.computation()
    def draw_noise():
      seed = discrete_gaussian.fresh_seed()
      noise = _discrete_noise(c.variance, c.draws, c.dimension, seed)
      if c.count_step:
        count_noise = _discrete_noise(c.count_variance, c.count_draws, 1, discrete_gaussian.fold_seed(seed, c.draws))
        noise = tf.concat([noise, count_noise], axis=0)
      return noise

    return draw_noise

  def _server_release_and_next_clip(self, value_type: tff.Type, calibration: Calibration) -> tff.Computation:
    """(integer sum, noise, clip, released) -> (result, next clip, grid step, noise std); zeros and the same clip
    if withheld."""
    c = calibration
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    divisor = float(self._expected) if self.output == composition.MEAN else 1.0
    adaptive = self._clip if isinstance(self._clip, AdaptiveClip) else None
    expected = float(self._expected or 1)
    channel = tff.TensorType(np.int64, [c.channel_size])

    @tff.tensorflow.computation(channel, channel, np.float32, np.bool_)
    def finish(summed, noise, clip, released):
      noisy = summed + noise
      grid_step = tf.cast(clip, tf.float64) / c.clip_steps
      flat = tf.cast(noisy[:c.dimension], tf.float64) * grid_step / divisor
      result = integer_grid.unflatten(tf.where(released, flat, tf.zeros_like(flat)), specs)
      next_clip = clip
      if adaptive is not None:
        fraction_below = tf.cast(noisy[c.dimension], tf.float64) / (2.0 * c.count_step) / expected + 0.5
        adapted = tf.cast(clip, tf.float64) * tf.exp(-adaptive.learning_rate * (fraction_below - adaptive.target_quantile))
        next_clip = tf.where(released, tf.cast(adapted, tf.float32), clip)
      noise_stddev = tf.where(released, c.noise_steps * grid_step, tf.constant(0.0, tf.float64))
      return result, next_clip, grid_step, noise_stddev

    return finish

  def _accountant(self, calibration: Calibration) -> tuple[tff.Computation, tff.Computation]:
    """(fits_budget, account) on the count of charged rounds; account gives (epsilon, against the server).

    The RDP of a round is computed once, at `create()`; the conversion to
    epsilon runs in the graph (`privacy_accounting.epsilon_in_graph`).
    """
    rows, delta, max_epsilon = (calibration.rdp_per_round, calibration.rdp_against_server), self._target_delta, self._max_epsilon

    def epsilons(rounds):
      return tuple(privacy_accounting.epsilon_in_graph(rdp, rounds, delta) for rdp in rows)

    def fits(rounds):
      return tf.constant(True) if max_epsilon is None else epsilons(rounds + 1)[0] <= max_epsilon

    return tff.tensorflow.computation(fits, np.int64), tff.tensorflow.computation(epsilons, np.int64)


def _clipping_fractions(statistics):
  """(fraction of participants clipped, number of non-finite clients) from the summed statistics."""
  return (tf.math.divide_no_nan(statistics['clipped'], statistics['participants']),
          tf.cast(tf.round(statistics['non_finite']), tf.int64))


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
