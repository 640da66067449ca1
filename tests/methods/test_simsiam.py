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
  z1 = networks.project(views[0]).numpy()
  p2 = networks.heads['predictor'](networks.project(views[1])).numpy()
  cos = np.sum(z1 * p2, axis=1) / np.linalg.norm(z1, axis=1) / np.linalg.norm(p2, axis=1)
  assert cos.shape == (4,)
  assert [layer.units for layer in networks.projector.layers if hasattr(layer, 'units')] == [256, 256, 8]
