"""`MedianNormClipping`: each client's value clipped to the median L2 norm of the round's values.

Norm bounding against boosted updates (Sun et al., 2019), with the bound set
from the round itself: clients send their norms, the server takes the median
(a multiple of it, `multiplier`), broadcasts it, and each client scales its
value by `min(1, bound / norm)` before the inner factory aggregates. A
minority of clients cannot move the bound, so no one client pulls harder than
a typical one; direction is not checked (a sign-flipped update passes).
TFF's `tff.aggregators.clipping_factory` with a quantile estimator adapts a
bound across rounds from noisy, secure counts; this one reacts within the
round, and pays for it with a channel: each client's norm reaches the server
in the clear (`client_values.collect`). The values themselves go through the
inner factory, which may be a secure sum.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.aggregators import client_values
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import non_finite
from tff_orchestra.runtime import contexts

_NORM = tff.TensorType(np.float32)


class MedianNormClipping(composition.ComposableFactory, tff.aggregators.UnweightedAggregationFactory):
  """`UnweightedAggregationFactory` clipping each value to `multiplier` x the round's median norm.

  Its result is the inner factory's (the mean by default, or a sum).
  State (`OrderedDict`): `inner_agg`. Measurements (`OrderedDict`):
  `median_norm_clipping` (the inner factory's), `clip` (the bound used),
  `clipped_clients`, `non_finite_clients` (their values enter the inner
  factory as zeros, `non_finite.py`, and their norms are left out).
  """

  inner_kind = composition.UNWEIGHTED

  def __init__(self, multiplier: float = 1.0, *,
               inner_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None):
    """Configures the factory.

    Args:
      multiplier: The bound is this times the median norm (> 0).
      inner_factory: Aggregates the clipped values. Default
        `tff.aggregators.UnweightedMeanFactory()`.
    """
    _checks.check_number(multiplier, 'multiplier', low=0.0, low_inclusive=False)
    if inner_factory is not None:
      composition.check_inner(self, inner_factory)
    self._multiplier = float(multiplier)

  def default_inner_factory(self) -> tff.aggregators.UnweightedAggregationFactory:
    return tff.aggregators.UnweightedMeanFactory()

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'MedianNormClipping')
    _checks.check_fully_defined(value_type, 'MedianNormClipping')
    contexts.check_context('MedianNormClipping', secure_sums=False)
    inner_process = self.inner_factory.create(value_type)
    multiplier = self._multiplier
    norm_flattening = client_values.Flattening(_NORM)
    norm_of = tff.tensorflow.computation(client_values.l2_norm, value_type)

    @tff.tensorflow.computation(tff.TensorType(np.float32, [None, 1]))
    def bound_from(norms):
      return multiplier * client_values.median(norms[:, 0])

    @tff.tensorflow.computation(value_type, np.float32)
    def clip(value, bound):
      value, excluded = non_finite.exclude_non_finite(value)
      # The very norm the server saw, so the median client itself is not clipped.
      norm = client_values.l2_norm(value)
      over = norm > bound
      return client_values.scaled(value, tf.where(over, bound / norm, 1.0)), tf.cast(over, tf.int32)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(inner_agg=inner_process.initialize()))

    @tff.federated_computation(init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # 1. Each client's norm to the server (a non-finite value sends none); the bound from their median.
      norms, non_finite_clients = client_values.collect(tff.federated_map(norm_of, value), norm_flattening)
      bound = tff.federated_map(bound_from, norms)
      # 2. Clients clip to the broadcast bound; the inner factory aggregates.
      clipped, was_clipped = tff.federated_map(clip, (value, tff.federated_broadcast(bound)))
      inner_output = inner_process.next(state.inner_agg, clipped)
      measurements = collections.OrderedDict(
          median_norm_clipping=inner_output.measurements, clip=bound,
          clipped_clients=tff.federated_sum(was_clipped), non_finite_clients=non_finite_clients)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(collections.OrderedDict(inner_agg=inner_output.state)),
          inner_output.result, tff.federated_zip(measurements))

    return tff.templates.AggregationProcess(init_fn, next_fn)
