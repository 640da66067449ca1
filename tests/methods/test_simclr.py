"""NT-Xent against its definition in numpy; SimCLR's views and networks."""

import numpy as np
import tensorflow as tf

from tff_orchestra.methods import simclr
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.model import small_cnn


def nt_xent_numpy(z1, z2, temperature):
  z = np.concatenate([z1, z2])
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z1)
  losses = []
  for i in range(2 * n):
    logits = z @ z[i] / temperature
    positive = (i + n) % (2 * n)
    others = [j for j in range(2 * n) if j != i]
    losses.append(-logits[positive] + np.log(np.sum(np.exp(logits[others]))))
  return np.mean(losses)


def test_nt_xent_is_the_definition():
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  ours = simclr.nt_xent(tf.constant(z1, tf.float32), tf.constant(z2, tf.float32), 0.1).numpy()
  assert np.isclose(ours, nt_xent_numpy(z1, z2, 0.1), rtol=1e-4)
  aligned = simclr.nt_xent(tf.constant(z1, tf.float32), tf.constant(z1, tf.float32), 0.1).numpy()
  assert aligned < ours


def test_two_views_differ_and_networks_project_to_the_configured_width():
  config = OrchestraConfig(projection_dim=8, flip=False)
  images = tf.random.stateless_uniform([4, 8, 8, 1], seed=[1, 2])
  first, second = simclr.METHOD.views(images, tf.constant([3, 4], tf.int64), config)
  assert first.shape == second.shape == images.shape and not np.allclose(first, second)
  networks = simclr.METHOD.networks(small_cnn, (8, 8, 1), config)
  assert networks.project(first).shape == (4, 8) and networks.ema_pairs == []
