"""The spectral contrastive loss against its definition (the reference's `l_specloss`)."""

import numpy as np
import tensorflow as tf

from tff_orchestra.methods import specloss
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.model import small_cnn


def test_loss_is_the_definition():
  rng = np.random.default_rng(0)
  c1, c2 = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
  n1, n2 = c1 / np.linalg.norm(c1, axis=1, keepdims=True), c2 / np.linalg.norm(c2, axis=1, keepdims=True)
  similarity = n1 @ n2.T
  off = similarity[~np.eye(5, dtype=bool)]
  expected = -2 * np.trace(similarity) / 5 + np.sum(off**2) / (5 * 4)
  ours = specloss.spectral_contrastive_loss(tf.constant(c1, tf.float32), tf.constant(c2, tf.float32)).numpy()
  assert np.isclose(ours, expected, rtol=1e-5)


def test_networks_have_the_cluster_layer_of_num_global_clusters():
  config = OrchestraConfig(projection_dim=8, num_global_clusters=12, num_local_clusters=4, flip=False)
  networks = specloss.METHOD.networks(small_cnn, (8, 8, 1), config)
  assert networks.heads['centroids'].output_shape == (None, 12)
  views = specloss.METHOD.views(tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 2]), tf.constant([3, 4], tf.int64),
                                config)
  assert np.isfinite(float(specloss.METHOD.loss(networks, views, config)))
