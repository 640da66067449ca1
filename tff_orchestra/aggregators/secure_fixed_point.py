"""Secure summation of floats as fixed-point integers with unbiased rounding.

Each client clips every coordinate of its value to `[-bound, bound]`, maps it
onto the integer grid `{0, ..., 2**bits - 1}` with *stochastic* rounding (so
the decoded sum is an unbiased estimate of the clipped sum), and the integers
travel through `tff.federated_secure_sum_bitwidth`: the server only ever sees
the sum. The server decodes `sum * step - num_clients * bound`.

Overflow is ruled out at construction: `max_clients` values of `bits` bits
need `bits + ceil(log2(max_clients))` bits, which must fit the 62 bits that
TFF's secure summation carries in int64. A round with more clients than
`max_clients` fails with an error instead of returning a wrapped-around sum.
"""

from __future__ import annotations

import collections
import math
from typing import Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.runtime import contexts
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import non_finite

MAX_SECURE_SUM_BITS = 62  # int64 secure sums in TFF keep one bit for carries.

BoundType = Union[float, tff.templates.EstimationProcess]


def encode_fixed_point(x: tf.Tensor, bound: tf.Tensor, bits: int) -> tf.Tensor:
  """`x` clipped to [-bound, bound] on the grid {0, ..., 2**bits - 1} (int64).

  Stochastic rounding in float64: the expected decoded value is the clipped
  `x`, up to 2**-24 of a step, because the uniform rounding noise is drawn in
  float32 (a quarter faster than float64 at 1M values).
  """
  levels = float(2**bits - 1)
  bound = tf.cast(bound, tf.float64)
  shifted = (tf.clip_by_value(tf.cast(x, tf.float64), -bound, bound) + bound) * (levels / (2.0 * bound))
  noise = tf.cast(tf.random.uniform(tf.shape(shifted), dtype=tf.float32), tf.float64)
  return tf.cast(tf.clip_by_value(tf.floor(shifted + noise), 0.0, levels), tf.int64)


class SecureFixedPointSum(composition.ComposableFactory, tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory` summing floats through secure aggregation.

  The created process's `next` uses only `tff.federated_secure_sum_bitwidth`
  (and, for an adaptive bound, the secure sums of the bound estimator), so
  `tff.test.assert_not_contains_unsecure_aggregation(process.next)` passes.

  State: `()` for a fixed bound, the estimator's state for an adaptive one.
  Measurements (`OrderedDict`):
    * `secure_clipped_count`: clients with at least one coordinate clipped.
    * `secure_bound`: the clipping bound used in this round.
    * `secure_quantization_step`: the fixed-point step `2 * bound / (2**bits - 1)`.
    * `non_finite_clients`: clients whose value had a NaN or infinite
      coordinate, summed as zeros (`non_finite.py`); also a secure sum. With an
      adaptive bound, such a client's zeros count as below the bound in the
      estimate (TFF's estimator takes a value from every client).

  Its result is the sum of the client values, as TFF's `SecureSumFactory`'s:
  use it as a `value_sum_factory`, an inner factory, or the last stage of `chain`.
  """

  output = composition.SUM
  secure = True

  def __init__(
      self,
      bound: BoundType = 1.0,
      *,
      bits: int = 20,
      max_clients: int = 10_000,
  ):
    """Configures the factory.

    Args:
      bound: Clip every coordinate to `[-bound, bound]`. A positive float, or a
        `tff.templates.EstimationProcess` over the clients' largest absolute
        coordinate (float32), for example
        `tff.aggregators.PrivateQuantileEstimationProcess.no_noise(1.0, 0.95,
        1.0, secure_estimation=True)`, to adapt it between rounds.
      bits: Bits of each client's encoded coordinate (1 to 61). More bits, finer
        grid: the rounding error of a coordinate has std at most `step / 2`.
      max_clients: The most clients that can take part in a round.

    Raises:
      TypeError: If an argument has the wrong type.
      ValueError: If `bound`, `bits` or `max_clients` is out of range, or if
        the sum of `max_clients` encoded values could overflow.
    """
    if isinstance(bound, tff.templates.EstimationProcess):
      _check_bound_process(bound)
    else:
      _checks.check_number(bound, 'bound', low=0.0, low_inclusive=False)
    _checks.check_number(bits, 'bits', low=1, high=MAX_SECURE_SUM_BITS - 1, integer=True)
    _checks.check_number(max_clients, 'max_clients', low=1, integer=True)
    sum_bits = bits + math.ceil(math.log2(max_clients)) if max_clients > 1 else bits
    if sum_bits > MAX_SECURE_SUM_BITS:
      raise ValueError(
          f'SecureFixedPointSum(bits={bits}, max_clients={max_clients}) could '
          f'overflow: the sum of {max_clients} values of {bits} bits needs '
          f'{sum_bits} bits, more than the {MAX_SECURE_SUM_BITS} that secure '
          'summation carries; lower bits or max_clients.'
      )
    self._bound = bound
    self._bits = bits
    self._max_clients = max_clients

  @property
  def bits(self) -> int:
    return self._bits

  @property
  def max_clients(self) -> int:
    return self._max_clients

  @property
  def _is_adaptive(self) -> bool:
    return isinstance(self._bound, tff.templates.EstimationProcess)

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'SecureFixedPointSum')
    contexts.check_context('SecureFixedPointSum', secure_sums=True)
    _checks.check_fully_defined(value_type, 'SecureFixedPointSum')
    bits = self._bits
    levels = float(2**bits - 1)
    max_clients = self._max_clients

    if self._is_adaptive:
      estimator = self._bound
      init_fn = estimator.initialize
      state_type = init_fn.type_signature.result.member
    else:
      fixed_bound = float(self._bound)

      @tff.federated_computation()
      def init_fn():
        return tff.federated_value((), tff.SERVER)

      state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(value_type, np.float32)
    def encode(value, bound):
      def max_abs(x):
        return tf.maximum(tf.cast(tf.reduce_max(tf.abs(x)), tf.float32), 0.0)

      value, excluded = non_finite.exclude_non_finite(value)
      encoded = tf.nest.map_structure(lambda x: encode_fixed_point(x, bound, bits), value)
      largest = tf.reduce_max(tf.stack([max_abs(x) for x in tf.nest.flatten(value)]))
      clipped = tf.cast(largest > tf.cast(bound, tf.float32), tf.int64)
      return encoded, clipped, tf.constant(1, tf.int64), largest, tf.cast(excluded, tf.int64)

    encoded_type = encode.type_signature.result[0]

    @tff.tensorflow.computation(encoded_type, np.int64, np.float32)
    def decode(summed, num_clients, bound):
      assert_fits = tf.debugging.assert_less_equal(
          num_clients,
          tf.constant(max_clients, tf.int64),
          message=(
              f'SecureFixedPointSum: more clients than max_clients={max_clients} '
              'took part; their encoded sum may have overflowed'
          ),
      )
      with tf.control_dependencies([assert_fits]):
        bound = tf.cast(bound, tf.float64)
        step = 2.0 * bound / levels
        offset = tf.cast(num_clients, tf.float64) * bound

      def decode_tensor(total, spec):
        return tf.cast(tf.cast(total, tf.float64) * step - offset, spec.dtype)

      return tf.nest.map_structure(
          decode_tensor, summed, tff.types.type_to_tf_tensor_specs(value_type)
      )

    @tff.tensorflow.computation(np.float32)
    def quantization_step(bound):
      return 2.0 * bound / levels

    @tff.federated_computation(
        tff.FederatedType(state_type, tff.SERVER),
        tff.FederatedType(value_type, tff.CLIENTS),
    )
    def next_fn(state, value):
      if self._is_adaptive:
        bound = estimator.report(state)
      else:
        bound = tff.federated_value(np.float32(fixed_bound), tff.SERVER)
      encoded, clipped, one, largest, excluded = tff.federated_map(
          encode, (value, tff.federated_broadcast(bound))
      )
      summed = tff.federated_secure_sum_bitwidth(encoded, bits)
      num_clients = tff.federated_secure_sum_bitwidth(one, 1)
      clipped_count = tff.federated_secure_sum_bitwidth(clipped, 1)
      non_finite_count = tff.federated_secure_sum_bitwidth(excluded, 1)
      result = tff.federated_map(decode, (summed, num_clients, bound))
      new_state = estimator.next(state, largest) if self._is_adaptive else state
      measurements = tff.federated_zip(
          collections.OrderedDict(
              secure_clipped_count=clipped_count,
              secure_bound=bound,
              secure_quantization_step=tff.federated_map(quantization_step, bound),
              non_finite_clients=non_finite_count,
          )
      )
      return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def _check_bound_process(process: tff.templates.EstimationProcess) -> None:
  """The estimator must take float32 client values and report a float32."""
  parameter = process.next.type_signature.parameter
  client_float = tff.FederatedType(np.float32, tff.CLIENTS)
  if (
      not isinstance(parameter, tff.StructType)
      or len(parameter) != 2
      or not parameter[1].is_assignable_from(client_float)
  ):
    raise TypeError(
        'bound: an EstimationProcess whose next takes (state, float32@CLIENTS) '
        f'is required, got next of type {process.next.type_signature}'
    )
  report = process.report.type_signature.result
  if not report.is_assignable_from(tff.FederatedType(np.float32, tff.SERVER)):
    raise TypeError(
        f'bound: the EstimationProcess must report float32@SERVER, got {report}'
    )
