"""`build_orchestra_process`: Orchestra trained by federated averaging in TFF (`build_orchestra_parts`: its parts).

A `tff.learning.templates.LearningProcess` composed of TFF's own parts:

    distributor  -> broadcast the model weights (online, target, BN statistics)
    client_work  -> Orchestra's client training, local-centroid collection and
                    global clustering (`client_work.py`)
    aggregator   -> YOUR `model_update_aggregation_factory` on the model update
    finalizer    -> weights += aggregated update (server learning rate 1, as
                    the reference's FedAvg)

The model update is the change of every model variable, in one `ModelWeights`
structure (`trainable`: online backbone, projector, degeneracy head;
`non_trainable`: online BatchNorm statistics and the whole target network), so
a DP or secure factory covers all of it. The local centroids are collected
separately, in the clear (see `client_work.py`), with the clients' loss sums;
with a `centroid_aggregation_factory` (private centroids) the clients send
per-global-centroid sums through that factory instead, and no loss sums: a
round's only aggregations are then the two factories'. The global centroids live in
the client work's state: `global_centroids(state)` reads them.

Metrics per round are nested as TFF nests them: `client_work/train`
(cluster_loss, degeneracy_loss, examples), `client_work/global_clustering`
(loss, clusters_in_use, ...) and `aggregator/...` (epsilon, qualities, ...).
Round 0 is the training-free initialisation round.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.aggregators import composition
from tff_orchestra.orchestra.client_work import OrchestraConfig, build_orchestra_client_work
from tff_orchestra.orchestra.model import ENCODERS, EncoderFn, OrchestraNetworks

AggregationFactory = Union[tff.aggregators.WeightedAggregationFactory, tff.aggregators.UnweightedAggregationFactory]


def resolve_encoder(encoder: Union[str, EncoderFn]) -> EncoderFn:
  """An encoder name from `ENCODERS`, or a callable `input_shape -> keras.Model`."""
  if isinstance(encoder, str):
    if encoder not in ENCODERS:
      raise ValueError(f'encoder must be one of {sorted(ENCODERS)} or a callable, got {encoder!r}')
    return ENCODERS[encoder]
  if not callable(encoder):
    raise TypeError(f'encoder must be a name or a callable input_shape -> keras.Model, got {type(encoder).__name__}')
  return encoder


@contextlib.contextmanager
def _seeded_keras(seed: int) -> Iterator[None]:
  """Seeds Keras's initialisers (they draw op seeds from Python's and NumPy's
  global generators), then puts those generators back as they were."""
  python_state, numpy_state = random.getstate(), np.random.get_state()
  tf.keras.utils.set_random_seed(seed)
  try:
    yield
  finally:
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def build_finalizer(weights_type: tff.Type, variance_mask: Sequence[bool]) -> tff.learning.templates.FinalizerProcess:
  """weights += update; BatchNorm moving variances kept >= 0.

  A noised update (DP) can push a small moving variance below zero, which
  would turn BatchNorm's output into NaN. Projecting it back to zero is
  post-processing: it costs no privacy.
  """

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.tensorflow.computation(weights_type, weights_type)
  def apply_update(weights, update):
    new = tf.nest.map_structure(tf.add, weights, update)
    non_trainable = [
        tf.maximum(value, 0.0) if is_variance else value
        for value, is_variance in zip(new.non_trainable, variance_mask)
    ]
    return tff.learning.models.ModelWeights(trainable=new.trainable, non_trainable=non_trainable)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.SERVER),
      tff.FederatedType(weights_type, tff.SERVER),
  )
  def next_fn(state, weights, update):
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_map(apply_update, (weights, update)), tff.federated_value((), tff.SERVER)
    )

  return tff.learning.templates.FinalizerProcess(init_fn, next_fn)


class OrchestraParts(NamedTuple):
  """The five parts `build_orchestra_process` composes, for running them one by one (e.g. to simulate attacks
  on the client updates between `client_work` and `aggregator`)."""

  initial_model_weights: tff.Computation
  distributor: tff.templates.MeasuredProcess
  client_work: tff.learning.templates.ClientWorkProcess
  aggregator: tff.templates.AggregationProcess
  finalizer: tff.learning.templates.FinalizerProcess


def build_orchestra_process(
    input_shape: Sequence[int],
    *,
    encoder: Union[str, EncoderFn] = 'small_cnn',
    config: Optional[OrchestraConfig] = None,
    client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
    model_update_aggregation_factory: Optional[AggregationFactory] = None,
    centroid_aggregation_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
  """Builds the Orchestra learning process: `build_orchestra_parts` (its arguments are documented there), composed."""
  return tff.learning.templates.compose_learning_process(*build_orchestra_parts(
      input_shape, encoder=encoder, config=config, client_optimizer=client_optimizer, client_weighting=client_weighting,
      model_update_aggregation_factory=model_update_aggregation_factory,
      centroid_aggregation_factory=centroid_aggregation_factory))


def build_orchestra_parts(
    input_shape: Sequence[int],
    *,
    encoder: Union[str, EncoderFn] = 'small_cnn',
    config: Optional[OrchestraConfig] = None,
    client_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
    model_update_aggregation_factory: Optional[AggregationFactory] = None,
    centroid_aggregation_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
) -> OrchestraParts:
  """Builds the parts of the Orchestra learning process (`build_orchestra_process` composes them).

  Args:
    input_shape: Shape of one image, `(height, width, channels)`, square.
    encoder: `'small_cnn'` (8x8, 28x28), `'resnet18'` (32x32) or a callable
      `input_shape -> tf.keras.Model` mapping images to feature vectors.
    config: Hyperparameters; defaults to the reference's (`OrchestraConfig()`).
    client_optimizer: A `tff.learning.optimizers.Optimizer`; default SGD with
      momentum (`config.client_learning_rate`, `config.client_momentum`). Weight
      decay `config.client_weight_decay` is added to the gradient before it.
    client_weighting: `tff.learning.ClientWeighting.NUM_EXAMPLES` (default) or
      `UNIFORM`. Use UNIFORM under `GaussianNoise` in a weighted chain: the
      clip then bounds each client's own update, not examples x update.
    model_update_aggregation_factory: Aggregates the model update; it must
      yield the mean update (`aggregators.as_model_aggregator` checks: a sum
      is refused). A weighted factory (default `tff.aggregators.MeanFactory()`;
      weights as `client_weighting` says) or an unweighted one (weights
      ignored, as `build_unweighted_fed_avg` does).
    centroid_aggregation_factory: None (default, the reference's way: local
      centroids and loss sums reach the server in the clear), or an
      unweighted factory yielding the *sum* (e.g.
      `GaussianNoise(..., output='sum')`) through which the clients'
      per-global-centroid projection sums travel (`client_work.py`, private
      centroids); the loss sums are then not aggregated.

  Returns:
    `OrchestraParts`; composed, a `tff.learning.templates.LearningProcess`
    whose `next(state, datasets)` takes one dataset of batched float32 images `[batch, *input_shape]` per
    client (`prepare_client_dataset` makes one; any batching). The client
    reshuffles its examples into `config.batch_size` batches every epoch,
    seeded by the round; it reads the dataset twice, so a dataset that
    reshuffles on each iteration makes rounds non-repeatable.
  """
  inputs = check_learner_inputs(input_shape, encoder, config, client_optimizer, client_weighting,
                                model_update_aggregation_factory)
  input_shape, encoder_fn, config, client_optimizer, factory = inputs
  if centroid_aggregation_factory is not None:
    if not isinstance(centroid_aggregation_factory, tff.aggregators.UnweightedAggregationFactory):
      raise TypeError(
          'centroid_aggregation_factory must be a tff.aggregators.UnweightedAggregationFactory, got '
          f'{type(centroid_aggregation_factory).__name__}'
      )
    if composition.output_of(centroid_aggregation_factory) != composition.SUM:
      raise ValueError(
          f'centroid_aggregation_factory: {composition.describe(centroid_aggregation_factory)} yields the mean; '
          "the centroid step needs the sum of the clients' projection sums (give it output='sum')"
      )
  initial_model_weights, variance_mask = build_initial_model_weights(
      lambda: OrchestraNetworks(encoder_fn, input_shape, config.projection_dim), config.seed)
  weights_type = initial_model_weights.type_signature.result
  client_work = build_orchestra_client_work(
      config, encoder_fn, input_shape, client_optimizer, weights_type,
      uniform_weighting=client_weighting == tff.learning.ClientWeighting.UNIFORM,
      centroid_aggregation_factory=centroid_aggregation_factory,
  )
  return OrchestraParts(
      initial_model_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      factory.create(weights_type, tff.TensorType(np.float32)),
      build_finalizer(weights_type, variance_mask),
  )


class LearnerInputs(NamedTuple):
  input_shape: tuple[int, ...]
  encoder_fn: EncoderFn
  config: OrchestraConfig
  client_optimizer: tff.learning.optimizers.Optimizer
  factory: AggregationFactory


def check_learner_inputs(input_shape, encoder, config, client_optimizer, client_weighting,
                         model_update_aggregation_factory) -> LearnerInputs:
  """The learner's arguments checked, with their defaults filled in (every method's learner takes them)."""
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or input_shape[0] != input_shape[1] or min(input_shape) < 1:
    raise ValueError(f'input_shape must be (size, size, channels) of a square image, got {input_shape}')
  encoder_fn = resolve_encoder(encoder)
  config = config or OrchestraConfig()
  if not isinstance(config, OrchestraConfig):
    raise TypeError(f'config must be an OrchestraConfig, got {type(config).__name__}')
  if config.jit_compile:
    raise NotImplementedError(
        "OrchestraConfig.jit_compile (--jit-compile): TFF 0.87's worker runs a step marked for XLA as a plain one "
        '(bitwise the same update, the same time), so the learner refuses it rather than ignore it; plain '
        "TensorFlow's LocalTraining honours it (docs/benchmarks/speed.md has its measured effect)"
    )
  client_optimizer = client_optimizer or tff.learning.optimizers.build_sgdm(
      learning_rate=config.client_learning_rate, momentum=config.client_momentum
  )
  if client_weighting not in (tff.learning.ClientWeighting.NUM_EXAMPLES, tff.learning.ClientWeighting.UNIFORM):
    raise ValueError(f'client_weighting must be NUM_EXAMPLES or UNIFORM, got {client_weighting!r}')
  factory = composition.as_model_aggregator(model_update_aggregation_factory or tff.aggregators.MeanFactory())
  return LearnerInputs(input_shape, encoder_fn, config, client_optimizer, factory)


def build_initial_model_weights(networks_fn, seed: int) -> tuple[tff.Computation, list[bool]]:
  """(the TF computation of the initial `ModelWeights`, target = online; which non-trainables are BN variances)."""
  variance_mask = []

  @tff.tensorflow.computation()
  def initial_model_weights():
    with _seeded_keras(seed):
      networks = networks_fn()
    networks.copy_online_to_target()
    weights = networks.model_weights()
    variance_mask.extend('moving_variance' in v.name for v in weights.non_trainable)
    return tf.nest.map_structure(tf.identity, weights)

  return initial_model_weights, variance_mask


def prepare_client_dataset(dataset: tf.data.Dataset, batch_size: int = 16) -> tf.data.Dataset:
  """Batched float32 images from a dataset of `{'x': image, ...}` elements (labels dropped)."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if not isinstance(dataset, tf.data.Dataset) or not (
      isinstance(dataset.element_spec, Mapping) and 'x' in dataset.element_spec
  ):
    spec = dataset.element_spec if isinstance(dataset, tf.data.Dataset) else type(dataset).__name__
    raise TypeError(f"prepare_client_dataset: expected a tf.data.Dataset of {{'x': image, ...}} elements, got {spec}")
  return dataset.map(lambda element: tf.cast(element['x'], tf.float32)).batch(batch_size)


def global_centroids(state) -> np.ndarray:
  """The global centroids [K_g, D] held in a learning process state."""
  return np.asarray(state.client_work['global_centroids'])


def round_num(state) -> int:
  """Rounds completed so far (round 0 is the initialisation round)."""
  return int(state.client_work['round_num'])
