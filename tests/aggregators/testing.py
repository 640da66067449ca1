"""Shared test pieces: counting inner factories (state counts rounds, measurement is 42),
the value types every factory must reject at `create()`, and a user's chain stage."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.aggregators.composition import ComposableFactory, check_inner

MEASUREMENT = 42.0

BAD_VALUE_TYPES = [
    tff.FederatedType(np.float32, tff.CLIENTS),
    tff.FunctionType(np.float32, np.float32),
    tff.SequenceType(np.float32),
    tff.TensorType(np.str_),
    tff.TensorType(np.int32),
]
BAD_VALUE_TYPE_IDS = ['federated', 'function', 'sequence', 'string', 'int']


def _counter_init():
  return tff.federated_computation(lambda: tff.federated_value(np.int32(0), tff.SERVER))


_increment = tff.tensorflow.computation(lambda x: x + 1, np.int32)


class CountingSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sums like `SumFactory`; state counts calls; measurement `counted=42.0`."""

  output = 'sum'  # declared, as any factory that sums must: see aggregators.composition

  def create(self, value_type):
    init_fn = _counter_init()

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      measurements = tff.federated_value(collections.OrderedDict(counted=np.float32(MEASUREMENT)), tff.SERVER)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_map(_increment, state), tff.federated_sum(value), measurements
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)


class CountingMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted mean (0 for zero total weight); state counts calls; measurement 42."""

  def create(self, value_type, weight_type):
    init_fn = _counter_init()
    specs = tff.types.type_to_tf_tensor_specs(value_type)

    @tff.tensorflow.computation(value_type, weight_type)
    def weigh(value, weight):
      return tf.nest.map_structure(lambda x: x * tf.cast(weight, x.dtype), value), weight

    weighted_type = weigh.type_signature.result[0]

    @tff.tensorflow.computation(weighted_type, weight_type)
    def divide(total, weight_total):
      return tf.nest.map_structure(
          lambda x, s: tf.cast(tf.math.divide_no_nan(x, tf.cast(weight_total, x.dtype)), s.dtype), total, specs
      )

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      weighted, weight = tff.federated_map(weigh, (value, weight))
      result = tff.federated_map(divide, (tff.federated_sum(weighted), tff.federated_sum(weight)))
      measurements = tff.federated_value(collections.OrderedDict(counted=np.float32(MEASUREMENT)), tff.SERVER)
      return tff.templates.MeasuredProcessOutput(tff.federated_map(_increment, state), result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


class ClipEachCoordinate(ComposableFactory, tff.aggregators.UnweightedAggregationFactory):
  """A user's stage: clips every coordinate to [-limit, limit], then its inner factory aggregates.

  It takes any unweighted inner factory and yields what that yields.
  """

  inner_kind = 'unweighted'

  def __init__(self, limit: float, *, inner_factory=None):
    if not limit > 0:
      raise ValueError(f'limit must be > 0, got {limit}')
    if inner_factory is not None:
      check_inner(self, inner_factory)
    self._limit = float(limit)

  def default_inner_factory(self):
    return tff.aggregators.SumFactory()

  def create(self, value_type):
    inner = self.inner_factory.create(value_type)
    limit = self._limit
    clip = tff.tensorflow.computation(
        lambda value: tf.nest.map_structure(lambda x: tf.clip_by_value(x, -limit, limit), value), value_type
    )

    @tff.federated_computation(inner.initialize.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      return inner.next(state, tff.federated_map(clip, value))

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
