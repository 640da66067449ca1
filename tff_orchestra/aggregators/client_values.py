"""Each client's value at the server, for the aggregators that need per-client information.

Coordinate-wise median, trimmed mean and Krum are functions of the individual
client values, not of their sum, so no secure sum can stand in for this
collection: the server sees every participating client's value in the clear
(`privacy_check` lists it as an unsecure aggregation), and `chain` refuses a
secure sum in a chain with one of them (`collects_client_values`,
`composition.is_secure`). `MedianNormClipping` and the robust mode of
`ClusterQualityWeighting` collect less (norms; unit sketches and norms), and
their values may still go through a secure inner sum.

`collect(value, flat)` runs inside a federated computation: each client
flattens its value into one vector (`Flattening`); a client whose value has a
NaN or infinite coordinate is left out and counted (`non_finite.py`: the
robust statistics are over the others). A `tff.federated_aggregate` stacks the
vectors into a `[clients, dimension]` matrix at the server, with no capacity
limit (memory: clients x dimension floats).

`RobustEstimate` is the base of the factories that turn that matrix into one
value (`estimate`), so each of them is only its statistic.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import integer_grid
from tff_orchestra.aggregators import non_finite
from tff_orchestra.runtime import contexts


class Flattening:
  """A value type's tensors as one vector and back (float64 if any tensor is, else float32)."""

  def __init__(self, value_type: tff.Type):
    self.specs = tff.types.type_to_tf_tensor_specs(value_type)
    self.dimension = integer_grid.size_of(value_type)
    self.dtype = np.float64 if any(spec.dtype == tf.float64 for spec in tf.nest.flatten(self.specs)) else np.float32

  def flatten(self, value) -> tf.Tensor:
    return tf.concat([tf.reshape(tf.cast(leaf, self.dtype), [-1]) for leaf in tf.nest.flatten(value)], axis=0)

  def unflatten(self, vector: tf.Tensor):
    return integer_grid.unflatten(vector, self.specs)


def median(rows: tf.Tensor) -> tf.Tensor:
  """The median over the first axis (for an even count, the mean of the two middle values, as `numpy.median`);
  zeros when there are no rows."""
  ordered, count = tf.sort(rows, axis=0), tf.shape(rows)[0]
  return tf.cond(count > 0, lambda: (ordered[(count - 1) // 2] + ordered[count // 2]) / 2,
                 lambda: tf.zeros(tf.shape(rows)[1:], rows.dtype))


def l2_norm(value) -> tf.Tensor:
  """The L2 norm (float32) of all of a structure's tensors together; one function, so a norm a client
  sends and the one it compares with the server's bound are the same number."""
  return tf.linalg.global_norm([tf.cast(x, tf.float32) for x in tf.nest.flatten(value)])


def scaled(value, scale: tf.Tensor):
  """Every tensor of `value` times the float32 scalar `scale`, in its own dtype."""
  return tf.nest.map_structure(lambda x: x * tf.cast(scale, x.dtype), value)


def collect(value, flat: Flattening):
  """(rows `[clients, dimension]`, non-finite clients (int32)) at the server, from `value` at the clients."""
  row_type = tff.TensorType(flat.dtype, [flat.dimension])
  stack_type = tff.to_type(collections.OrderedDict(
      rows=tff.TensorType(flat.dtype, [None, flat.dimension]), non_finite_clients=np.int32))

  @tff.tensorflow.computation(value.type_signature.member)
  def flatten(client_value):
    return flat.flatten(client_value), non_finite.is_non_finite(client_value)

  @tff.tensorflow.computation()
  def empty():
    return collections.OrderedDict(rows=tf.zeros([0, flat.dimension], flat.dtype), non_finite_clients=tf.constant(0))

  @tff.tensorflow.computation(stack_type, (row_type, np.bool_))
  def append(stack, row_and_flag):
    row, excluded = row_and_flag
    rows = tf.cond(excluded, lambda: stack['rows'], lambda: tf.concat([stack['rows'], row[tf.newaxis]], axis=0))
    return collections.OrderedDict(rows=rows, non_finite_clients=stack['non_finite_clients'] + tf.cast(excluded, tf.int32))

  @tff.tensorflow.computation(stack_type, stack_type)
  def merge(a, b):
    return collections.OrderedDict(
        rows=tf.concat([a['rows'], b['rows']], axis=0), non_finite_clients=a['non_finite_clients'] + b['non_finite_clients'])

  @tff.tensorflow.computation(stack_type)
  def report(stack):
    return stack['rows'], stack['non_finite_clients']

  return tff.federated_aggregate(tff.federated_map(flatten, value), empty(), append, merge, report)


class RobustEstimate(composition.ComposableFactory, tff.aggregators.UnweightedAggregationFactory):
  """Base of the factories whose result is a statistic of the individual client values.

  Its result stands where a mean would (`output = 'mean'`): used as a model
  aggregator it replaces the mean update. It takes no inner factory, so it can
  only be the last stage of a chain, and `collects_client_values` makes `chain`
  refuse it beside a secure sum.

  State: `()`. Measurements (`OrderedDict`): `clients` (values the statistic
  used), `non_finite_clients` (left out), then the subclass's own.
  A round in which no client sends a finite value yields zeros.
  """

  output = composition.MEAN
  collects_client_values = True

  def estimate(self, rows: tf.Tensor) -> tuple[tf.Tensor, collections.OrderedDict]:
    """(the statistic `[dimension]`, its own measurements) of `rows` (`[clients >= 1, dimension]`)."""
    raise NotImplementedError

  def empty_measurements(self) -> collections.OrderedDict:
    """The subclass's own measurements for a round without values (same structure as `estimate`'s)."""
    return collections.OrderedDict()

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    name = type(self).__name__
    _checks.check_float_value_type(value_type, name)
    _checks.check_fully_defined(value_type, name)
    contexts.check_context(name, secure_sums=False)
    flat = Flattening(value_type)
    summarise = self._summary(flat)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      rows, non_finite_clients = collect(value, flat)
      result, measurements = tff.federated_map(summarise, (rows, non_finite_clients))
      return tff.templates.MeasuredProcessOutput(state, result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _summary(self, flat: Flattening) -> tff.Computation:
    """(rows, non-finite clients) -> (the value-shaped statistic, measurements)."""

    @tff.tensorflow.computation(tff.TensorType(flat.dtype, [None, flat.dimension]), np.int32)
    def summarise(rows, non_finite_clients):
      clients = tf.shape(rows)[0]
      empty = (tf.zeros([flat.dimension], flat.dtype), self.empty_measurements())
      statistic, own = tf.cond(clients > 0, lambda: self.estimate(rows), lambda: empty)
      measurements = collections.OrderedDict(clients=clients, non_finite_clients=non_finite_clients, **own)
      return flat.unflatten(statistic), measurements

    return summarise
