"""A `weight_sum_factory` that releases nothing: the weighted mean divides by a stated total.

In `tff.aggregators.MeanFactory(value_sum_factory=..., weight_sum_factory=...)`
the sum of the client weights reaches the server without noise; when the
weights depend on client data (`ClusterQualityWeighting`'s qualities, example
counts) that sum is a channel outside any epsilon. `FixedWeightSum(total)`
takes its place: the clients send nothing, and the "sum" is `total` (for
example the expected clients per round, as DP-FedAvg divides by it), so the
mean is `sum_i w_i x_i / total`: smaller than the weighted mean when fewer
clients, or smaller weights, take part.

    agg.chain(agg.ClusterQualityWeighting(4), agg.GaussianNoise(...),
              weight_sum_factory=agg.FixedWeightSum(10.0))
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.aggregators import composition


class FixedWeightSum(tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory` whose result is always `total`; nothing leaves a client.

  State: `()`. Measurements (`OrderedDict`): `fixed_weight_sum` (the total).
  """

  output = composition.SUM

  def __init__(self, total: float):
    _checks.check_number(total, 'total', low=0.0, low_inclusive=False)
    self._total = float(total)

  def __repr__(self) -> str:
    return f'FixedWeightSum({self._total!r})'

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    if not isinstance(value_type, tff.TensorType) or value_type.shape != () or not (
        np.issubdtype(value_type.dtype, np.floating) or np.issubdtype(value_type.dtype, np.integer)
    ):
      raise TypeError(f'FixedWeightSum.create: value_type must be a scalar weight or count, got {value_type}')
    if np.issubdtype(value_type.dtype, np.integer) and not self._total.is_integer():
      raise TypeError(f'FixedWeightSum({self._total:g}) cannot stand for a sum of {value_type.dtype} counts')
    dtype, total = value_type.dtype, self._total

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    constant = tff.tensorflow.computation(lambda: tf.constant(total, dtype))

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      del value  # Nothing is aggregated: the server states the total.
      result = tff.federated_eval(constant, tff.SERVER)
      measurements = tff.federated_zip(collections.OrderedDict(fixed_weight_sum=result))
      return tff.templates.MeasuredProcessOutput(state, result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
