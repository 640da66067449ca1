"""`build_learning_process`: any registered method trained by federated averaging with the user's aggregator.

For a `BatchLossMethod` (`build_method_process`) the `LearningProcess` is
composed of the same TFF parts as Orchestra's:

    distributor  -> broadcast the model weights
    client_work  -> the method's local epochs (`client_work.py`)
    aggregator   -> YOUR `model_update_aggregation_factory` on the model update
    finalizer    -> weights += aggregated update, BN variances kept >= 0

so any aggregation factory, DP, secure or robust, applies to every method as
it applies to Orchestra, and the update is the only thing a client sends.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import tensorflow_federated as tff

from tff_orchestra.methods.client_work import build_method_client_work
from tff_orchestra.methods.method import BatchLossMethod, SelfSupervisedMethod, resolve_method
from tff_orchestra.orchestra.config import OrchestraConfig
from tff_orchestra.orchestra.learner import (AggregationFactory, build_finalizer, build_initial_model_weights,
                                             check_learner_inputs)
from tff_orchestra.orchestra.model import EncoderFn


def build_learning_process(
    input_shape: Sequence[int],
    *,
    method: Union[str, SelfSupervisedMethod] = 'orchestra',
    encoder: Union[str, EncoderFn] = 'small_cnn',
    config: Optional[OrchestraConfig] = None,
    client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
    model_update_aggregation_factory: Optional[AggregationFactory] = None,
    centroid_aggregation_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
  """The learning process of `method` (a registered name or a `SelfSupervisedMethod`).

  The arguments are `orchestra.build_orchestra_parts`'s; `centroid_aggregation_factory`
  is Orchestra's alone (other methods send no centroids) and is refused for them.
  """
  method = resolve_method(method)
  kwargs = dict(encoder=encoder, config=config, client_optimizer=client_optimizer,
                client_weighting=client_weighting, model_update_aggregation_factory=model_update_aggregation_factory)
  if centroid_aggregation_factory is not None:
    if method.name != 'orchestra':
      raise ValueError(f'centroid_aggregation_factory: only Orchestra sends centroids; method {method.name!r} does not')
    kwargs['centroid_aggregation_factory'] = centroid_aggregation_factory
  return method.build_process(input_shape, **kwargs)


def build_method_process(
    method: BatchLossMethod,
    input_shape: Sequence[int],
    *,
    encoder: Union[str, EncoderFn] = 'small_cnn',
    config: Optional[OrchestraConfig] = None,
    client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
    model_update_aggregation_factory: Optional[AggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
  """The `LearningProcess` of a `BatchLossMethod` (module docstring)."""
  input_shape, encoder_fn, config, client_optimizer, factory = check_learner_inputs(
      input_shape, encoder, config, client_optimizer, client_weighting, model_update_aggregation_factory)
  initial_model_weights, variance_mask = build_initial_model_weights(
      lambda: method.networks(encoder_fn, input_shape, config), config.seed)
  weights_type = initial_model_weights.type_signature.result
  client_work = build_method_client_work(
      method, config, encoder_fn, input_shape, client_optimizer, weights_type,
      uniform_weighting=client_weighting == tff.learning.ClientWeighting.UNIFORM,
  )
  return tff.learning.templates.compose_learning_process(
      initial_model_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      factory.create(weights_type, tff.TensorType(np.float32)),
      build_finalizer(weights_type, variance_mask),
  )
