"""Rotation prediction: the view is the image turned by its label, normalised, nothing else."""

import numpy as np
import tensorflow as tf

from tff_orchestra.methods import rotation
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.model import small_cnn


def test_views_are_the_rotated_images_and_the_loss_is_the_cross_entropy():
  config = OrchestraConfig(projection_dim=8)
  images = tf.random.stateless_uniform([6, 8, 8, 1], seed=[1, 2])
  turned, labels = rotation.METHOD.views(images, tf.constant([3, 4], tf.int64), config)
  for i in range(6):
    np.testing.assert_allclose(turned[i], np.rot90(images.numpy()[i], k=int(labels[i]), axes=(0, 1)) * 2 - 1,
                               atol=1e-6)
  networks = rotation.METHOD.networks(small_cnn, (8, 8, 1), config)
  loss = rotation.METHOD.loss(networks, (turned, labels), config)
  assert 0.0 < float(loss) < 10.0
