"""Federated SimSiam (Chen & He 2021), as the reference trains it: a predictor and a stop-gradient, no negatives.

Projector (`projection_MLP_simsiam`): [Dense(256, no bias) -> BN -> ReLU] x 2
-> Dense(D, no bias) -> BN without scale and centre; predictor
(`prediction_MLP_simsiam`): Dense(D, no bias) -> BN -> ReLU -> Dense(D).
Loss `-(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2`. Views: `SimCLRTransform`.
"""

from __future__ import annotations

import tensorflow as tf

from tff_orchestra.methods.method import Networks, BatchLossMethod, cosine, mlp
from tff_orchestra.methods.simclr import two_views
from tff_orchestra.orchestra import augment

HIDDEN = 256  # the reference's projector width


class SimSiam(BatchLossMethod):
  name = 'simsiam'

  def networks(self, encoder_fn, input_shape, config):
    d = config.projection_dim
    predictor = mlp(d, [(d, False, 'bn_relu'), (d, True, 'none')], 'predictor')
    return Networks(
        encoder_fn, input_shape,
        lambda f: mlp(f, [(HIDDEN, False, 'bn_relu'), (HIDDEN, False, 'bn_relu'), (d, False, 'bn')], 'projector'),
        heads={'predictor': predictor},
    )

  def views(self, images, seed, config):
    return two_views(images, seed, config, augment.ORCHESTRA_VIEW_1, augment.ORCHESTRA_VIEW_1)

  def loss(self, networks, views, config):
    z1, z2 = networks.project(views[0]), networks.project(views[1])
    predictor = networks.heads['predictor']
    p1, p2 = predictor(z1, training=True), predictor(z2, training=True)
    return -(tf.reduce_mean(cosine(p1, tf.stop_gradient(z2))) + tf.reduce_mean(cosine(p2, tf.stop_gradient(z1)))) / 2


METHOD = SimSiam()
