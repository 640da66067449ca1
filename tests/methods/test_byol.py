"""BYOL: an EMA target (BYOL's direction, not the reference's inverted one) and a predictor."""

import tensorflow as tf

from tff_orchestra.methods import byol
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.client_work import ema_update
from tff_orchestra.orchestra.model import small_cnn

CONFIG = OrchestraConfig(projection_dim=8, flip=False)


def test_networks_have_a_target_that_moves_slowly_towards_the_online_network():
  networks = byol.METHOD.networks(small_cnn, (8, 8, 1), CONFIG)
  networks.copy_online_to_target()
  pairs = networks.ema_pairs
  assert len(pairs) == len(networks.backbone.trainable_variables) + len(networks.projector.trainable_variables)
  target, online = pairs[0]
  before = target.numpy().copy()
  online.assign(online + 1.0)
  ema_update(pairs, CONFIG.ema_decay)
  assert abs(float(tf.reduce_mean(target - before)) - (1 - CONFIG.ema_decay)) < 1e-5
  weights = networks.model_weights()
  assert all(v.ref() not in {t.ref() for t in weights.trainable} for v in networks.target_backbone.variables)


def test_loss_has_no_gradient_into_the_target():
  networks = byol.METHOD.networks(small_cnn, (8, 8, 1), CONFIG)
  views = byol.METHOD.views(tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 2]), tf.constant([3, 4], tf.int64),
                            CONFIG)
  with tf.GradientTape() as tape:
    loss = byol.METHOD.loss(networks, views, CONFIG)
  gradients = tape.gradient(loss, networks.target_projector.trainable_variables)
  assert all(g is None for g in gradients) and -1.0 <= float(loss) <= 1.0
