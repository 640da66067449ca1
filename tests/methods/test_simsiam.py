"""SimSiam's loss: negative mean cosine of predictions against stopped projections."""

import numpy as np
import tensorflow as tf

from tff_orchestra.methods import simsiam
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.model import small_cnn


def test_loss_is_the_symmetric_negative_cosine_and_stops_the_gradient_of_the_projections():
  config = OrchestraConfig(projection_dim=8, flip=False)
  networks = simsiam.METHOD.networks(small_cnn, (8, 8, 1), config)
  views = simsiam.METHOD.views(tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 2]), tf.constant([3, 4], tf.int64),
                               config)
  with tf.GradientTape(persistent=True) as tape:
    loss = simsiam.METHOD.loss(networks, views, config)
  assert -1.0 <= float(loss) <= 1.0
  assert all(g is not None for g in tape.gradient(loss, networks.heads['predictor'].trainable_variables))
  z1, z2 = networks.project(views[0]).numpy(), networks.project(views[1]).numpy()  # training mode: batch statistics
  p1, p2 = (networks.heads['predictor'](z, training=True).numpy() for z in (z1, z2))

  def cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

  expected = -(cosine(p1, z2).mean() + cosine(p2, z1).mean()) / 2
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4, atol=1e-5)
  assert [layer.units for layer in networks.projector.layers if hasattr(layer, 'units')] == [256, 256, 8]
