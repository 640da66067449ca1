"""Federated rotation prediction (Gidaris et al. 2018), as the reference trains it: which of 0/90/180/270 degrees.

Projector (`projection_MLP_rotpred`): Dense(D, no bias) -> BN -> ReLU ->
Dense(D) -> BN without scale and centre; head Dense(4). The view is the
image itself, rotated (the reference's `RotTransform`: no other
augmentation), normalised.
"""

from __future__ import annotations

import tensorflow as tf

from tff_orchestra.methods.method import Networks, BatchLossMethod, mlp
from tff_orchestra.orchestra import augment


class RotationPrediction(BatchLossMethod):
  name = 'rotation'

  def networks(self, encoder_fn, input_shape, config):
    d = config.projection_dim
    head = mlp(d, [(augment.NUM_ROTATIONS, True, 'none')], 'rotation_head')
    return Networks(encoder_fn, input_shape, lambda f: mlp(f, [(d, False, 'bn_relu'), (d, True, 'bn')], 'projector'),
                    heads={'rotation': head})

  def views(self, images, seed, config):
    turned, labels = augment.rotated(images, seed + [32, 0])
    return augment.normalize(turned), labels

  def loss(self, networks, views, config):
    images, labels = views
    logits = networks.heads['rotation'](networks.project(images), training=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


METHOD = RotationPrediction()
