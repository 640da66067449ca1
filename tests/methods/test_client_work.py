"""A BatchLossMethod's client round, eagerly: one step's loss is the method's loss on the client's shuffled batch."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.methods import client_work, simclr
from tff_orchestra.orchestra import OrchestraConfig, batches
from tff_orchestra.orchestra.client_work import client_seed
from tff_orchestra.orchestra.model import small_cnn

CONFIG = OrchestraConfig(projection_dim=8, local_epochs=1, flip=False)
SHAPE = (8, 8, 1)


def _training():
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=CONFIG.client_learning_rate, momentum=0.9)
  return client_work.MethodTraining(simclr.METHOD, CONFIG, small_cnn, SHAPE, optimizer)


def test_one_step_loss_is_the_methods_loss_on_the_reshuffled_batch():
  training = _training()
  incoming = tf.nest.map_structure(lambda v: tf.constant(v.numpy()), training.model_weights)
  images = np.random.default_rng(0).uniform(size=(20, *SHAPE)).astype(np.float32)  # one full batch, 4 dropped
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(7)
  round_seed = tf.constant([0, 3], tf.int64)
  result, metrics = training(incoming, dataset, round_seed)
  assert float(metrics['batches']) == 1.0 and float(metrics['examples']) == 16.0 and float(result.update_weight) == 16.0

  networks = simclr.METHOD.networks(small_cnn, SHAPE, CONFIG)
  tf.nest.map_structure(lambda v, w: v.assign(w), networks.model_weights(), incoming)
  seed = client_seed(round_seed, dataset)
  order = batches.epoch_orders(20, CONFIG.batch_size, 1, seed + [1, 1])
  views = simclr.METHOD.views(tf.gather(images, order[0]), seed + [1, 0], CONFIG)
  expected = simclr.METHOD.loss(networks, views, CONFIG)
  np.testing.assert_allclose(float(metrics['loss_sum']), float(expected), rtol=1e-4)
  moved = [not np.allclose(u, 0.0) for u in result.update.trainable]
  assert any(moved)


def test_a_client_without_a_full_batch_or_with_nan_sends_weight_zero():
  training = _training()
  incoming = tf.nest.map_structure(lambda v: tf.constant(v.numpy()), training.model_weights)
  small = tf.data.Dataset.from_tensor_slices(np.zeros((5, *SHAPE), np.float32)).batch(5)
  result, metrics = training(incoming, small, tf.constant([0, 1], tf.int64))
  assert float(result.update_weight) == 0.0 and float(metrics['empty_clients']) == 1.0
  bad = np.full((16, *SHAPE), np.nan, np.float32)
  result, metrics = training(incoming, tf.data.Dataset.from_tensor_slices(bad).batch(16), tf.constant([0, 1], tf.int64))
  assert float(result.update_weight) == 0.0 and float(metrics['non_finite_clients']) == 1.0
  assert all(np.all(np.asarray(u) == 0.0) for u in tf.nest.flatten(result.update))
