"""Distributed differential privacy: the distributed discrete Gaussian over a secure modular sum.

The mechanism of Kairouz, Liu and Steinke 2021 ("The distributed discrete
Gaussian mechanism for federated learning with secure aggregation",
Algorithms 1-2), run as TFF's private `distributed_dp.DistributedDpSumFactory`
runs it, with the accounting that TFF leaves out. Each client:

1. flattens its value (float64), pads it to d = a power of two, clips it to L2
   norm `clip`;
2. rotates it by a randomized Hadamard transform (random signs from a seed the
   server draws each round: public, norm-preserving; it spreads the value over
   the coordinates so that none is large);
3. scales it onto the integer grid (`grid_step` = 1 / scale, chosen so that
   `wrap_probability` bounds a coordinate's chance of wrapping around the
   modulus, TFF's heuristic) and rounds every coordinate up or down at random,
   redrawing until the integer vector's squared L2 norm is at most
   `l2_bound_squared` (conditional randomized rounding, `integer_grid.py`; after
   100 failed draws it sends the zero vector, which meets the bound too);
4. adds integer noise N_Z(0, `variance`) to every coordinate, drawn by the exact
   sampler of `discrete_gaussian.py`;
5. reduces it modulo 2**`bits` and sends it through
   `tff.backends.mapreduce.federated_secure_modular_sum`.

The server learns only the modular sum (and the number of participants, a
secure sum of ones), maps it to [-2**(bits-1), 2**(bits-1)), and undoes the
scaling and the rotation: post-processing of the noisy integer sum. A
coordinate whose noisy sum left that range wraps around; that costs accuracy,
never privacy, since the released value is a function of the noisy sum.

**Guarantee** (`epsilon` in the measurements, `epsilon_after()` in Python), for what
the server sees of this value, against the server itself (which draws the
clients and knows who took part, so no amplification by sampling is claimed):
(epsilon, target_delta)-DP under `relation`:

* `'zero_out'` (default): neighbouring inputs differ in one client's value,
  replaced by zeros (dp_accounting's `REPLACE_SPECIAL`); the participants are
  the same, as the server knows them. L2 sensitivity of the integer sum:
  sqrt(`l2_bound_squared`), enforced on the client by step 3.
* `'replace_one'`: one client's value replaced by any other: twice that.

Assumed: in every released round at least `min_clients` participants are
honest (follow the protocol and keep their noise secret); only their noise is
counted: a variance of `min_clients * variance` in every coordinate.
Dishonest or colluding participants beyond that may subtract their own noise
without breaking the bound. A round with fewer than `min_clients`
participants is withheld (zeros, not charged); TFF's simulation lets the
server compute that sum anyway, so a deployment must also set its secure
aggregation threshold to `min_clients`. The RDP of a round is Proposition 14
of the paper (min of its three bounds, with tau = 10 * sum_{k<n}
exp(-2 pi**2 variance k / (k + 1)) for n = min_clients), composed over rounds
and converted to epsilon as dp_accounting does. The sampler's truncation
(`discrete_gaussian.py`) adds under 1e-54000 per coordinate to delta.

Channels: the modular sum and the participant count; nothing else leaves a
client (no clipping statistics, no count of non-finite values, which are sent
as zeros). With `max_epsilon`, a round that would take epsilon above it is
not run (`budget_exhausted`), as in `GaussianNoise`; `epsilon_after(rounds,
value_type)` is the same number in Python.

Its result is the sum over `expected_clients_per_round`, a mean
(`output='mean'`), or the sum (`output='sum'`). It takes no inner factory: it
is the last stage of a `chain`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics
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
from tff_orchestra.runtime import contexts

RELATIONS = ('zero_out', 'replace_one')
MAX_BITS = 40
_MAX_NOISE_STD = math.isqrt(discrete_gaussian.MAX_VARIANCE) - 1  # in grid steps, so the rounded-up variance fits


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The integer mechanism for one value size: what runs, and what is accounted."""

  dimension: int  # the value's size
  padded_dimension: int  # d, a power of two
  scale: float  # grid steps per unit: grid_step = 1 / scale
  variance: int  # each client's noise, in squared grid steps
  l2_bound_squared: int  # the rounded vector's squared norm is at most this (grid steps)
  rdp_per_round: np.ndarray  # at privacy_accounting.RDP_ORDERS

  @property
  def grid_step(self) -> float:
    return 1.0 / self.scale


class DistributedDiscreteGaussian(privacy_accounting.DifferentiallyPrivateStage, composition.ComposableFactory,
                                  tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory`: distributed discrete Gaussian noise through a secure modular sum.

  State (`OrderedDict`): `rounds` (rounds released and charged).
  Measurements (`OrderedDict`): `clip`, `grid_step`, `noise_stddev` (std of
  the honest noise in the released sum, in value units; 0 when withheld),
  `participants`, `released`, `epsilon`, `rounds`, and with `max_epsilon`
  `budget_exhausted`. See the module docstring for the guarantee.
  """

  secure = True

  def __init__(
      self,
      noise_multiplier: float,
      clip: float,
      *,
      expected_clients_per_round: int,
      min_clients: Optional[int] = None,
      bits: int = 24,
      wrap_probability: float = 1e-9,
      beta: float = math.exp(-0.5),
      relation: str = 'zero_out',
      target_delta: float = 1e-5,
      max_epsilon: Optional[float] = None,
      output: str = composition.MEAN,
  ):
    """Configures the factory.

    Args:
      noise_multiplier: Std of the honest clients' summed noise as a multiple
        of `clip` (>= 0; 0 sends no noise and epsilon is infinite). The integer
        mechanism rounds the variance up and accounts what it runs.
      clip: The L2 norm every client value is clipped to (> 0).
      expected_clients_per_round: Clients per round: sizes the grid and, with
        `output='mean'`, divides the sum.
      min_clients: The guaranteed minimum of honest participants; each client
        adds 1/min_clients of the noise variance, and rounds with fewer
        participants are withheld. Default: `expected_clients_per_round`.
      bits: The modulus is 2**bits (2 to 40).
      wrap_probability: A coordinate's allowed chance of wrapping around the
        modulus (sizes the grid; accuracy only).
      beta: Conditional rounding parameter in [0, 1): smaller inflates the
        sensitivity less and redraws more (paper: exp(-0.5)); 0 is plain
        randomized rounding with the worst-case bound.
      relation: `'zero_out'` or `'replace_one'` (module docstring).
      target_delta: The delta of the reported epsilon, in (0, 1).
      max_epsilon: If set, a round that would take epsilon above it is withheld.
      output: `'mean'` (default) or `'sum'`.
    """
    _checks.check_number(noise_multiplier, 'noise_multiplier', low=0.0)
    _checks.check_number(clip, 'clip', low=0.0, low_inclusive=False)
    _checks.check_number(expected_clients_per_round, 'expected_clients_per_round', low=1, integer=True)
    if min_clients is None:
      min_clients = expected_clients_per_round
    _checks.check_number(min_clients, 'min_clients', low=1, high=expected_clients_per_round, integer=True)
    _checks.check_number(bits, 'bits', low=2, high=MAX_BITS, integer=True)
    _checks.check_number(wrap_probability, 'wrap_probability', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    _checks.check_number(beta, 'beta', low=0.0, high=1.0, high_inclusive=False)
    if relation not in RELATIONS:
      raise ValueError(f'relation must be one of {RELATIONS}, got {relation!r}')
    _checks.check_number(target_delta, 'target_delta', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    if max_epsilon is not None:
      _checks.check_number(max_epsilon, 'max_epsilon', low=0.0, low_inclusive=False)
    if output not in composition.OUTPUTS:
      raise ValueError(f'output must be one of {composition.OUTPUTS}, got {output!r}')
    self._wrap_stddevs = -statistics.NormalDist().inv_cdf(wrap_probability / 2.0)  # two-sided
    if 2.0 ** (2 * bits) <= expected_clients_per_round * self._wrap_stddevs**2:
      raise ValueError(
          f'bits={bits} is too few for {expected_clients_per_round} clients at wrap_probability '
          f'{wrap_probability:g}: the rounding noise of the sum alone would wrap; raise bits'
      )
    self._noise_multiplier = float(noise_multiplier)
    self._clip = float(clip)
    self._expected = expected_clients_per_round
    self._min_clients = min_clients
    self._bits = bits
    self._beta = float(beta)
    self._relation = relation
    self._target_delta = float(target_delta)
    self._max_epsilon = max_epsilon

  @property
  def placement(self) -> str:
    return 'distributed'

  @property
  def min_clients(self) -> int:
    return self._min_clients

  @property
  def max_clients(self) -> int:
    """The most participants whose int64 encoded values cannot overflow the simulated modular sum."""
    return 2 ** (63 - self._bits) - 1

  @property
  def relation(self) -> str:
    return self._relation

  def calibrate(self, value_type: tff.Type) -> Calibration:
    """The grid, noise variance, sensitivity and per-round RDP for values of `value_type`."""
    dimension = integer_grid.size_of(value_type)
    padded = 2 ** max(0, math.ceil(math.log2(max(dimension, 1))))
    n, k, c = self._expected, self._wrap_stddevs, self._clip
    local_std = self._noise_multiplier * c / math.sqrt(self._min_clients)
    # TFF's heuristic: k stds of a coordinate of the noisy sum fit half the modulus.
    scale = math.sqrt(2.0 ** (2 * self._bits) - n * k**2) / (2.0 * k * math.sqrt(c**2 * n**2 / padded + n * local_std**2))
    if local_std > 0:
      scale = min(scale, _MAX_NOISE_STD / local_std)
    variance = math.ceil((local_std * scale) ** 2) if local_std > 0 else 0
    l2_bound_squared = math.floor(integer_grid.rounded_squared_norm_bound(c * scale, self._beta, padded))
    if (c * scale + math.sqrt(padded)) ** 2 >= integer_grid.MAX_SQUARED_NORM:
      raise ValueError(f'bits={self._bits} is too many for {dimension} coordinates: lower bits')
    return Calibration(
        dimension, padded, scale, variance, l2_bound_squared,
        self._rdp_per_round(variance, l2_bound_squared, padded),
    )

  def _rdp_per_round(self, variance: int, l2_bound_squared: int, padded: int) -> np.ndarray:
    """Proposition 14 of Kairouz, Liu and Steinke 2021 for `min_clients` noise shares, at `RDP_ORDERS`."""
    sensitivity = math.sqrt(l2_bound_squared) * (2.0 if self._relation == 'replace_one' else 1.0)
    return privacy_accounting.discrete_gaussian_sum_rdp(
        privacy_accounting.RDP_ORDERS, sensitivity, variance, self._min_clients, padded
    )

  def epsilon_after(self, rounds: int, value_type: tff.Type) -> float:
    """Epsilon at `target_delta` after `rounds` released rounds on values of `value_type` (Python side)."""
    rdp = self.calibrate(value_type).rdp_per_round
    return float(privacy_accounting.epsilon_in_graph(rdp, tf.constant(rounds, tf.int64), self._target_delta))

  def noised_channel_type(self, value_type: tff.Type) -> tff.Type:
    """What the noised aggregation carries for values of `value_type`: the padded integer vector."""
    return tff.TensorType(np.int64, [self.calibrate(value_type).padded_dimension])

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'DistributedDiscreteGaussian')
    contexts.check_context('DistributedDiscreteGaussian', secure_sums=True)
    _checks.check_fully_defined(value_type, 'DistributedDiscreteGaussian')
    calibration = self.calibrate(value_type)
    encode = self._client_encode(value_type, calibration)
    decode = self._server_decode(value_type, calibration)
    fits_budget, account = self._accountant(calibration)
    modulus, min_clients, budgeted = np.int64(2**self._bits), self._min_clients, self._max_epsilon is not None
    grid_step, clip = calibration.grid_step, self._clip

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(rounds=tff.federated_value(np.int64(0), tff.SERVER)))

    draw_seed = tff.tensorflow.computation(
        lambda: tf.random.uniform([2], 0, 2**62, dtype=tf.int64)
    )
    enough = tff.tensorflow.computation(lambda fits, m: tf.logical_and(fits, m >= min_clients), np.bool_, np.int64)
    charge = tff.tensorflow.computation(lambda rounds, released: rounds + tf.cast(released, tf.int64), np.int64, np.bool_)
    honest_noise_stddev = math.sqrt(min_clients * calibration.variance) * grid_step
    noise_stddev = tff.tensorflow.computation(
        lambda released: tf.where(released, tf.constant(honest_noise_stddev, tf.float64), 0.0), np.bool_
    )
    withheld = tff.tensorflow.computation(lambda fits: tf.logical_not(fits), np.bool_)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # 1. The server withholds a round over budget, and draws the round's rotation, before clients send.
      fits = tff.federated_map(fits_budget, state.rounds)
      seed = tff.federated_eval(draw_seed, tff.SERVER)
      # 2. Clients clip, rotate, round, noise and reduce; 3. the modular sum and the count, securely.
      encoded = tff.federated_map(encode, (value, tff.federated_broadcast(seed), tff.federated_broadcast(fits)))
      summed = tff.backends.mapreduce.federated_secure_modular_sum(encoded, modulus)
      participants = tff.federated_secure_sum_bitwidth(tff.federated_value(np.int64(1), tff.CLIENTS), 1)
      # 4. Released only within budget and with at least min_clients participants; then decoded.
      released = tff.federated_map(enough, (fits, participants))
      result = tff.federated_map(decode, (summed, seed, released))
      rounds = tff.federated_map(charge, (state.rounds, released))
      measurements = collections.OrderedDict(
          clip=tff.federated_value(np.float32(clip), tff.SERVER),
          grid_step=tff.federated_value(np.float64(grid_step), tff.SERVER),
          noise_stddev=tff.federated_map(noise_stddev, released),
          participants=participants,
          released=released,
          epsilon=tff.federated_map(account, rounds),
          rounds=rounds,
      )
      if budgeted:
        measurements['budget_exhausted'] = tff.federated_map(withheld, fits)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(collections.OrderedDict(rounds=rounds)), result, tff.federated_zip(measurements)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _client_encode(self, value_type: tff.Type, calibration: Calibration) -> tff.Computation:
    """(value, rotation seed, send) -> the noisy integer vector modulo 2**bits (steps 1-5 of the module docstring)."""
    padded, scale, clip = calibration.padded_dimension, calibration.scale, self._clip
    variance, bound, modulus = calibration.variance, calibration.l2_bound_squared, 2**self._bits

    @tff.tensorflow.computation(value_type, tff.TensorType(np.int64, [2]), np.bool_)
    def encode(value, seed, send):
      value, _ = non_finite.exclude_non_finite(value)
      flat, _ = integer_grid.l2_clip(integer_grid.flatten(value, padded), clip)
      rounding_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(discrete_gaussian.fresh_seed(), 2))
      rounded = integer_grid.conditional_round(_rotate(flat, seed) * scale, bound, rounding_seed)
      noised = rounded + discrete_gaussian.sample_discrete_gaussian(variance, padded, noise_seed)
      return tf.math.floormod(tf.where(send, noised, tf.zeros_like(noised)), modulus)

    return encode

  def _server_decode(self, value_type: tff.Type, calibration: Calibration) -> tff.Computation:
    """(modular sum, rotation seed, released) -> the value-typed sum (or mean); zeros unless released."""
    padded, scale, bits = calibration.padded_dimension, calibration.scale, self._bits
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    divisor = float(self._expected) if self.output == composition.MEAN else 1.0

    @tff.tensorflow.computation(tff.TensorType(np.int64, [padded]), tff.TensorType(np.int64, [2]), np.bool_)
    def decode(summed, seed, released):
      half = 2 ** (bits - 1)
      centred = tf.math.floormod(summed + half, 2 * half) - half
      flat = _unrotate(tf.cast(centred, tf.float64) / scale, seed) / divisor
      flat = tf.where(released, flat, tf.zeros_like(flat))
      return integer_grid.unflatten(flat, specs)

    return decode

  def _accountant(self, calibration: Calibration) -> tuple[tff.Computation, tff.Computation]:
    """(fits_budget, epsilon) on the count of charged rounds."""
    rdp, delta, max_epsilon = calibration.rdp_per_round, self._target_delta, self._max_epsilon

    def epsilon(rounds):
      return privacy_accounting.epsilon_in_graph(rdp, rounds, delta)

    def fits(rounds):
      return tf.constant(True) if max_epsilon is None else epsilon(rounds + 1) <= max_epsilon

    return tff.tensorflow.computation(fits, np.int64), tff.tensorflow.computation(epsilon, np.int64)


def hadamard(x: tf.Tensor) -> tf.Tensor:
  """The orthonormal Walsh-Hadamard transform of a vector whose length is a power of two (its own inverse)."""
  n = int(x.shape[0])
  y, half = x, 1
  while half < n:
    pairs = tf.reshape(y, [n // (2 * half), 2, half])
    y = tf.reshape(tf.stack([pairs[:, 0] + pairs[:, 1], pairs[:, 0] - pairs[:, 1]], axis=1), [n])
    half *= 2
  return y / math.sqrt(n)


def _signs(seed: tf.Tensor, n: int) -> tf.Tensor:
  return tf.cast(2 * tf.random.stateless_uniform([n], seed, 0, 2, dtype=tf.int64) - 1, tf.float64)


def _rotate(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """H D x: random signs from `seed`, then the Hadamard transform (norm-preserving)."""
  return hadamard(_signs(seed, int(x.shape[0])) * x)


def _unrotate(y: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return _signs(seed, int(y.shape[0])) * hadamard(y)
