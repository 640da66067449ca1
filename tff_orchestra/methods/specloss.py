"""Federated spectral contrastive learning (HaoChen et al. 2021), as the reference trains it.

Projector (`projection_MLP_specloss`): Dense(D, no bias) -> BN -> ReLU ->
Dense(D, no bias) -> BN without scale and centre; then a Dense(K_g) layer
(`config.num_global_clusters`, as the reference, which uses Orchestra's
cluster count) on the normalised projections. Loss on the cosine matrix S of
the two views' outputs: `-2 mean(diag S) + sum(offdiag S^2) / (N (N - 1))`.
Views: the reference's `SpecLossTransform`: a plain crop (scale (0.08, 1),
bilinear) and flip; a crop (0.2, 1) with jitter (0.4, 0.4, 0.4, 0.1),
grayscale and blur.
"""

from __future__ import annotations

import tensorflow as tf

from tff_orchestra.methods.method import Networks, BatchLossMethod, mlp
from tff_orchestra.methods.simclr import two_views
from tff_orchestra.orchestra import augment


def spectral_contrastive_loss(c1: tf.Tensor, c2: tf.Tensor) -> tf.Tensor:
  similarity = tf.matmul(tf.math.l2_normalize(c1, axis=1), tf.math.l2_normalize(c2, axis=1), transpose_b=True)
  n = tf.cast(tf.shape(c1)[0], tf.float32)
  positives = tf.linalg.diag_part(similarity)
  negatives = tf.reduce_sum(tf.square(similarity)) - tf.reduce_sum(tf.square(positives))
  return -2.0 * tf.reduce_mean(positives) + negatives / (n * (n - 1.0))


class SpecLoss(BatchLossMethod):
  name = 'specloss'

  def networks(self, encoder_fn, input_shape, config):
    d = config.projection_dim
    centroids = mlp(d, [(config.num_global_clusters, True, 'none')], 'centroids')
    return Networks(encoder_fn, input_shape, lambda f: mlp(f, [(d, False, 'bn_relu'), (d, False, 'bn')], 'projector'),
                    heads={'centroids': centroids})

  def views(self, images, seed, config):
    return two_views(images, seed, config, augment.SPECLOSS_VIEW_1, augment.SPECLOSS_VIEW_2)

  def loss(self, networks, views, config):
    centroids = networks.heads['centroids']
    c1, c2 = (centroids(tf.math.l2_normalize(networks.project(v), axis=1), training=True) for v in views)
    return spectral_contrastive_loss(c1, c2)


METHOD = SpecLoss()
