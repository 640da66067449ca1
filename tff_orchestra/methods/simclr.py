"""Federated SimCLR (Chen et al. 2020), as the reference trains it: two views, the NT-Xent loss at temperature T.

Projector (the reference's `projection_MLP_simclr`): Dense(D, no bias) -> BN
-> ReLU -> Dense(D) -> BN without scale and centre. Views: the reference's
`SimCLRTransform` (Orchestra's first view, twice). Temperature:
`config.temperature` (the reference's `main_T`, 0.1).
"""

from __future__ import annotations

import tensorflow as tf

from tff_orchestra.methods.method import Networks, BatchLossMethod, mlp
from tff_orchestra.orchestra import augment


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tf.Tensor:
  """Normalised-temperature cross-entropy: each view's positive is the other view of its image, the
  negatives the 2N - 2 other views of the batch."""
  z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
  n = tf.shape(z1)[0]
  logits = tf.matmul(z, z, transpose_b=True) / temperature - 1e9 * tf.eye(2 * n)  # never itself
  positives = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positives, logits=logits))


def two_views(images: tf.Tensor, seed: tf.Tensor, config, first: augment.ViewSpec, second: augment.ViewSpec):
  """Two views, each by its spec adapted to the config's crop and flip settings."""
  adapt = dict(min_crop_area=config.min_crop_area, flip=config.flip)
  return (augment.view(images, seed + [10, 0], first.adapted(**adapt)),
          augment.view(images, seed + [20, 0], second.adapted(**adapt)))


class SimCLR(BatchLossMethod):
  name = 'simclr'

  def networks(self, encoder_fn, input_shape, config):
    d = config.projection_dim
    return Networks(encoder_fn, input_shape, lambda f: mlp(f, [(d, False, 'bn_relu'), (d, True, 'bn')], 'projector'))

  def views(self, images, seed, config):
    return two_views(images, seed, config, augment.ORCHESTRA_VIEW_1, augment.ORCHESTRA_VIEW_1)

  def loss(self, networks, views, config):
    return nt_xent(networks.project(views[0]), networks.project(views[1]), config.temperature)


METHOD = SimCLR()
