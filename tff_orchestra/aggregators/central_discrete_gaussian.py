"""Central differential privacy without floating-point noise: discrete Gaussian noise on an integer grid.

`GaussianNoise` adds float32 Gaussian noise to a float sum, and the low-order
bits of the result depend on the input (Mironov 2012: for inputs 0 and 1 the
released value lands off a grid with probability 0.126 against 0). Here every
released number is a function of an integer: each client clips its value to
L2 norm `clip`, scales it onto a grid of `grid_step` and rounds it to integers
with conditional randomized rounding, whose squared norm bound is checked in
int64 (`integer_grid.py`); `integer_sum_factory` sums the integer vectors; the
server adds discrete Gaussian noise, drawn exactly in integer arithmetic
(`discrete_gaussian.py`), and only then turns the integers back into values.

The grid has at least 2047 / noise_multiplier steps per clip norm, and at
least 5 sqrt(d) (so rounding inflates the sensitivity by about 1% or less);
the noise is a sum of `draws` discrete Gaussians of integer `variance`, enough
for a standard deviation of at least `noise_multiplier * clip` (one draw holds
at most 2047 grid steps of standard deviation).

**Guarantee** (`epsilon`): (epsilon, target_delta)-DP of the released sum, for
the value this factory sees, under the relation and sampling of `sampling`
(`privacy_accounting.Sampling`, as for `GaussianNoise`). The mechanism's RDP
is Proposition 14 of Kairouz, Liu and Steinke 2021 for `draws` discrete
Gaussians (one draw: exactly the Gaussian's, Canonne, Kamath and Steinke
2020) at the rounded vectors' sensitivity (twice it under replace-one);
amplification by sampling uses bounds that hold for any mechanism with that
RDP (`privacy_accounting.amplified_rdp`: a little looser than dp_accounting's
Gaussian events). `epsilon_against_server` assumes no amplification. The
sampler's range truncation adds under 1e-54000 per coordinate to delta.

Its result is the noisy sum over `expected_clients_per_round` (`'mean'`) or
the noisy sum (`'sum'`). It is the last stage of a `chain`; its integer sum
is `integer_sum_factory`'s (default `tff.aggregators.SumFactory()`; a secure
integer sum, e.g. `tff.aggregators.SecureSumFactory`, hides each client's
vector from the server, which is trusted with the sum here).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import discrete_gaussian
from tff_orchestra.aggregators import integer_grid
from tff_orchestra.aggregators import non_finite
from tff_orchestra.aggregators import privacy_accounting

STEPS_PER_NOISE_STD = math.isqrt(discrete_gaussian.MAX_VARIANCE) - 1  # 2047: one draw's largest std
ROUNDING_STEPS_PER_ROOT_DIMENSION = 5.0  # clip >= 5 sqrt(d) grid steps: rounding adds <= ~1% to the sensitivity


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The integer mechanism for one value size: what runs, and what is accounted."""

  dimension: int
  scale: float  # grid steps per unit: grid_step = 1 / scale
  variance: int  # of each discrete Gaussian draw, in squared grid steps
  draws: int
  l2_bound_squared: int  # a client's rounded vector's squared norm is at most this
  rdp_per_round: np.ndarray  # amplified as the sampling says
  rdp_against_server: np.ndarray

  @property
  def grid_step(self) -> float:
    return 1.0 / self.scale

  @property
  def noise_stddev(self) -> float:
    return math.sqrt(self.draws * self.variance) / self.scale


class CentralDiscreteGaussian(privacy_accounting.DifferentiallyPrivateStage, composition.ComposableFactory,
                              tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory`: clip, round to integers, sum, add discrete Gaussian noise on the server.

  State (`OrderedDict`): `rounds` (rounds released and charged), `sum_agg`
  (`integer_sum_factory`'s state). Measurements (`OrderedDict`): `sum`
  (its measurements), `clip`, `grid_step`, `noise_stddev` (0 when withheld),
  `epsilon`, `epsilon_against_server`, `rounds`, and with `max_epsilon`
  `budget_exhausted`. No clipping statistics leave a client.
  """

  def __init__(
      self,
      noise_multiplier: float,
      clip: float,
      *,
      expected_clients_per_round: Optional[int] = None,
      population: Optional[int] = None,
      sampling: str = privacy_accounting.POISSON,
      target_delta: float = 1e-5,
      max_epsilon: Optional[float] = None,
      beta: float = math.exp(-0.5),
      output: str = composition.MEAN,
      integer_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
  ):
    """Configures the factory; the arguments are `GaussianNoise`'s (fixed clip) and:

    Args:
      beta: Conditional rounding parameter in [0, 1) (`DistributedDiscreteGaussian`).
      integer_sum_factory: Sums the clients' int64 vectors; it must yield the
        sum. Default `tff.aggregators.SumFactory()`.
    """
    _checks.check_number(noise_multiplier, 'noise_multiplier', low=0.0)
    _checks.check_number(clip, 'clip', low=0.0, low_inclusive=False)
    if expected_clients_per_round is not None:
      _checks.check_number(expected_clients_per_round, 'expected_clients_per_round', low=1, integer=True)
    elif output == composition.MEAN:
      raise ValueError(
          "CentralDiscreteGaussian: output='mean' (the default) divides the noisy sum by "
          "expected_clients_per_round: pass it, or output='sum'"
      )
    self._sampling = privacy_accounting.stated_sampling(sampling, population, expected_clients_per_round, target_delta)
    if max_epsilon is not None:
      _checks.check_number(max_epsilon, 'max_epsilon', low=0.0, low_inclusive=False)
    _checks.check_number(beta, 'beta', low=0.0, high=1.0, high_inclusive=False)
    if output not in composition.OUTPUTS:
      raise ValueError(f'output must be one of {composition.OUTPUTS}, got {output!r}')
    self._integer_sum_factory = integer_sum_factory or tff.aggregators.SumFactory()
    _checks.check_factory(self._integer_sum_factory, 'integer_sum_factory', weighted=False)
    if composition.output_of(self._integer_sum_factory) != composition.SUM:
      raise ValueError('integer_sum_factory must yield the sum of the client values (e.g. tff.aggregators.SumFactory())')
    self._noise_multiplier = float(noise_multiplier)
    self._clip = float(clip)
    self._expected = expected_clients_per_round
    self._target_delta = float(target_delta)
    self._max_epsilon = max_epsilon
    self._beta = float(beta)

  @property
  def placement(self) -> str:
    return 'central'

  @property
  def sampling(self) -> privacy_accounting.Sampling:
    return self._sampling

  def calibrate(self, value_type: tff.Type) -> Calibration:
    """The grid, the noise and the per-round RDP for values of `value_type`."""
    dimension = integer_grid.size_of(value_type)
    z, c = self._noise_multiplier, self._clip
    clip_steps = max(STEPS_PER_NOISE_STD / z if z > 0 else STEPS_PER_NOISE_STD,
                     ROUNDING_STEPS_PER_ROOT_DIMENSION * math.sqrt(dimension))
    scale = clip_steps / c
    noise_variance = (z * clip_steps) ** 2  # in squared grid steps
    draws = max(1, math.ceil(noise_variance / discrete_gaussian.MAX_VARIANCE))
    variance = math.ceil(noise_variance / draws)
    l2_bound_squared = math.floor(integer_grid.rounded_squared_norm_bound(clip_steps, self._beta, dimension))
    if (clip_steps + math.sqrt(dimension)) ** 2 >= integer_grid.MAX_SQUARED_NORM:
      raise ValueError(f'CentralDiscreteGaussian: {dimension} coordinates are too many for an int64 norm check')
    rdp_of_order = self._rdp_of_order(l2_bound_squared, variance, draws, dimension)
    unamplified = privacy_accounting.amplified_rdp(rdp_of_order, privacy_accounting.Sampling())
    return Calibration(
        dimension, scale, variance if z > 0 else 0, draws, l2_bound_squared,
        privacy_accounting.amplified_rdp(rdp_of_order, self._sampling) if z > 0 else unamplified,
        unamplified,
    )

  def _rdp_of_order(self, l2_bound_squared: int, variance: int, draws: int, dimension: int):
    sensitivity = math.sqrt(l2_bound_squared) * (2.0 if self._sampling.relation == privacy_accounting.REPLACE_ONE else 1.0)

    def rdp_of_order(order):
      return float(privacy_accounting.discrete_gaussian_sum_rdp([order], sensitivity, variance, draws, dimension)[0])

    return rdp_of_order

  def rdp_curve(self, value_type: tff.Type):
    """The unamplified RDP of one round as a function of the order, under `sampling.relation` (for `epsilon_of_stages`)."""
    c = self.calibrate(value_type)
    if c.variance == 0:
      return lambda order: np.inf
    return self._rdp_of_order(c.l2_bound_squared, c.variance, c.draws, c.dimension)

  def epsilon_after(self, rounds: int, value_type: tff.Type, *, against_server: bool = False) -> float:
    """Epsilon at `target_delta` after `rounds` released rounds on values of `value_type` (Python side)."""
    calibration = self.calibrate(value_type)
    rdp = calibration.rdp_against_server if against_server else calibration.rdp_per_round
    return float(privacy_accounting.epsilon_in_graph(rdp, tf.constant(rounds, tf.int64), self._target_delta))

  def noised_channel_type(self, value_type: tff.Type) -> tff.Type:
    """What the noised aggregation carries: the clients' integer vectors."""
    return tff.TensorType(np.int64, [integer_grid.size_of(value_type)])

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'CentralDiscreteGaussian')
    _checks.check_fully_defined(value_type, 'CentralDiscreteGaussian')
    calibration = self.calibrate(value_type)
    encode = self._client_encode(value_type, calibration)
    sum_process = self._integer_sum_factory.create(self.noised_channel_type(value_type))
    decode = self._server_noise_and_decode(value_type, calibration)
    fits_budget, account = self._accountant(calibration)
    clip, grid_step, budgeted = self._clip, calibration.grid_step, self._max_epsilon is not None
    noise_stddev = tff.tensorflow.computation(
        lambda released: tf.where(released, tf.constant(calibration.noise_stddev, tf.float64), 0.0), np.bool_
    )
    charge = tff.tensorflow.computation(lambda rounds, released: rounds + tf.cast(released, tf.int64), np.int64, np.bool_)
    withheld = tff.tensorflow.computation(lambda released: tf.logical_not(released), np.bool_)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          rounds=tff.federated_value(np.int64(0), tff.SERVER), sum_agg=sum_process.initialize()
      ))

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # 1. The server withholds a round over budget before clients send anything.
      released = tff.federated_map(fits_budget, state.rounds)
      # 2. Clients clip and round to integers; 3. the integer sum; 4. the server's discrete noise, then values.
      encoded = tff.federated_map(encode, (value, tff.federated_broadcast(released)))
      summed = sum_process.next(state.sum_agg, encoded)
      result = tff.federated_map(decode, (summed.result, released))
      rounds = tff.federated_map(charge, (state.rounds, released))
      epsilon, epsilon_against_server = tff.federated_map(account, rounds)
      measurements = collections.OrderedDict(
          sum=summed.measurements,
          clip=tff.federated_value(np.float32(clip), tff.SERVER),
          grid_step=tff.federated_value(np.float64(grid_step), tff.SERVER),
          noise_stddev=tff.federated_map(noise_stddev, released),
          epsilon=epsilon,
          epsilon_against_server=epsilon_against_server,
          rounds=rounds,
      )
      if budgeted:
        measurements['budget_exhausted'] = tff.federated_map(withheld, released)
      new_state = collections.OrderedDict(rounds=rounds, sum_agg=summed.state)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(new_state), result, tff.federated_zip(measurements)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _client_encode(self, value_type: tff.Type, calibration: Calibration) -> tff.Computation:
    """(value, send) -> the clipped value on the grid, rounded to an int64 vector within the norm bound."""
    dimension, scale, clip, bound = calibration.dimension, calibration.scale, self._clip, calibration.l2_bound_squared

    @tff.tensorflow.computation(value_type, np.bool_)
    def encode(value, send):
      value, _ = non_finite.exclude_non_finite(value)
      flat = integer_grid.flatten(value, dimension)
      norm = tf.norm(flat)
      flat *= tf.where(norm > clip, clip / norm, tf.constant(1.0, tf.float64))
      rounded = integer_grid.conditional_round(flat * scale, bound, discrete_gaussian.fresh_seed())
      return tf.where(send, rounded, tf.zeros_like(rounded))

    return encode

  def _server_noise_and_decode(self, value_type: tff.Type, calibration: Calibration) -> tff.Computation:
    """(integer sum, released) -> noisy sum (or mean) as `value_type`, zeros unless released."""
    dimension, scale, variance, draws = calibration.dimension, calibration.scale, calibration.variance, calibration.draws
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    divisor = float(self._expected) if self.output == composition.MEAN else 1.0

    @tff.tensorflow.computation(tff.TensorType(np.int64, [dimension]), np.bool_)
    def decode(summed, released):
      seed = discrete_gaussian.fresh_seed()
      noise = tf.add_n([
          discrete_gaussian.sample_discrete_gaussian(variance, dimension, discrete_gaussian.fold_seed(seed, draw))
          for draw in range(draws)
      ])
      flat = tf.cast(summed + noise, tf.float64) / scale / divisor
      return integer_grid.unflatten(tf.where(released, flat, tf.zeros_like(flat)), specs)

    return decode

  def _accountant(self, calibration: Calibration) -> tuple[tff.Computation, tff.Computation]:
    """(fits_budget, account) on the count of charged rounds; account gives (epsilon, against the server)."""
    rows, delta, max_epsilon = (calibration.rdp_per_round, calibration.rdp_against_server), self._target_delta, self._max_epsilon

    def epsilons(rounds):
      return tuple(privacy_accounting.epsilon_in_graph(rdp, rounds, delta) for rdp in rows)

    def fits(rounds):
      return tf.constant(True) if max_epsilon is None else epsilons(rounds + 1)[0] <= max_epsilon

    return tff.tensorflow.computation(fits, np.int64), tff.tensorflow.computation(epsilons, np.int64)
