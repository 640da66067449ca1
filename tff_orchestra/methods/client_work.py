"""The client work of a `BatchLossMethod`: local epochs of its loss over reshuffled full batches.

Per round, each client receives the model weights, trains `local_epochs`
epochs of `batch_size` batches (its examples reshuffled every epoch, the last
incomplete batch dropped: `orchestra/batches.py`), each batch: the method's
views, the EMA update of its target (if it has one), one optimiser step on
its loss plus weight decay. It returns the change of every model variable,
weighted by the examples it trained on (or 1 with uniform weighting). A client
without a full batch, or whose data or results are not finite, sends weight 0.
Nothing else reaches the server: no centroids, only the loss sums.

State: `round_num` (seeds the round). Measurements: `train` (`loss`,
`examples`, `empty_clients`, `non_finite_clients`).
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.methods.method import BatchLossMethod
from tff_orchestra.orchestra import batches
from tff_orchestra.orchestra.client_work import client_seed, ema_update, training_counts
from tff_orchestra.orchestra.config import OrchestraConfig
from tff_orchestra.orchestra.model import EncoderFn


class MethodTraining:
  """One client's round of a `BatchLossMethod` in plain TensorFlow (wrapped by `build_method_client_work`)."""

  def __init__(self, method: BatchLossMethod, config: OrchestraConfig, encoder_fn: EncoderFn,
               input_shape: Sequence[int], client_optimizer: tff.learning.optimizers.Optimizer,
               uniform_weighting: bool = False):
    self.method, self.config = method, config
    self.networks = method.networks(encoder_fn, input_shape, config)
    self.model_weights = self.networks.model_weights()
    self._optimizer = client_optimizer
    self._uniform_weighting = uniform_weighting

  @tf.function
  def __call__(self, incoming, dataset, round_seed):
    config, networks, model_weights = self.config, self.networks, self.model_weights
    trainable = model_weights.trainable
    optimizer_state = self._optimizer.initialize(
        tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), tuple(trainable))
    )
    tf.nest.map_structure(lambda v, t: v.assign(t), model_weights, incoming)
    seed = client_seed(round_seed, dataset)
    examples, data_finite = batches.gather_examples(dataset)
    batches_per_epoch = tf.shape(examples)[0] // config.batch_size
    order = batches.epoch_orders(tf.shape(examples)[0], config.batch_size, config.local_epochs, seed + [1, 1])
    loss_sum = tf.constant(0.0)
    for step in tf.range(tf.shape(order)[0]):
      views = self.method.views(tf.gather(examples, order[step]), seed + [1, step], config)
      ema_update(networks.ema_pairs, config.ema_decay)
      with tf.GradientTape() as tape:
        loss = self.method.loss(networks, views, config)
      gradients = tape.gradient(loss, trainable)
      gradients = [g + config.client_weight_decay * w for g, w in zip(gradients, trainable)]
      optimizer_state, updated = self._optimizer.next(optimizer_state, tuple(trainable), tuple(gradients))
      for variable, value in zip(trainable, updated):
        variable.assign(value)
      loss_sum += loss

    update = tf.nest.map_structure(lambda v, t: v - t, model_weights, incoming)
    finite = tf.reduce_all(
        [data_finite, tf.math.is_finite(loss_sum)] + [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(update)]
    )
    update = tf.nest.map_structure(lambda t: tf.where(finite, t, tf.zeros_like(t)), update)
    trained_examples = tf.cast(batches_per_epoch * config.batch_size, tf.float32)
    weight = tf.cast(trained_examples > 0, tf.float32) if self._uniform_weighting else trained_examples
    kept = tf.cast(finite, tf.float32)
    metrics = collections.OrderedDict(
        loss_sum=tf.where(finite, loss_sum, 0.0),
        **training_counts(tf.shape(order)[0], trained_examples, batches_per_epoch, kept),
    )
    return tff.learning.templates.ClientResult(update=update, update_weight=weight * kept), metrics


def build_method_client_work(
    method: BatchLossMethod,
    config: OrchestraConfig,
    encoder_fn: EncoderFn,
    input_shape: Sequence[int],
    client_optimizer: tff.learning.optimizers.Optimizer,
    weights_type: tff.Type,
    uniform_weighting: bool = False,
) -> tff.learning.templates.ClientWorkProcess:
  """The `ClientWorkProcess` of a `BatchLossMethod` (module docstring)."""
  dataset_type = tff.SequenceType(tff.TensorType(np.float32, [None, *input_shape]))

  @tff.tensorflow.computation(weights_type, dataset_type, tff.TensorType(np.int64, [2]))
  def client_update(incoming, dataset, round_seed):
    training = MethodTraining(method, config, encoder_fn, input_shape, client_optimizer, uniform_weighting)
    return training(incoming, dataset, round_seed)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value(collections.OrderedDict(round_num=np.int64(0)), tff.SERVER)

  seed = config.seed
  round_seed_of = tff.tensorflow.computation(
      lambda state: tf.stack([tf.constant(seed, tf.int64), state['round_num']]), init_fn.type_signature.result.member
  )
  next_state = tff.tensorflow.computation(
      lambda state: collections.OrderedDict(round_num=state['round_num'] + 1), init_fn.type_signature.result.member
  )

  @tff.tensorflow.computation(client_update.type_signature.result[1])
  def mean_loss(sums):
    return collections.OrderedDict(
        loss=tf.math.divide_no_nan(sums['loss_sum'], sums['batches']), examples=sums['examples'],
        empty_clients=sums['empty_clients'], non_finite_clients=sums['non_finite_clients'],
    )

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(dataset_type, tff.CLIENTS),
  )
  def next_fn(state, weights, client_data):
    round_seed = tff.federated_broadcast(tff.federated_map(round_seed_of, state))
    result, metrics = tff.federated_map(client_update, (weights, client_data, round_seed))
    measurements = tff.federated_zip(
        collections.OrderedDict(train=tff.federated_map(mean_loss, tff.federated_sum(metrics)))
    )
    return tff.templates.MeasuredProcessOutput(tff.federated_map(next_state, state), result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
