"""Federated BYOL (Grill et al. 2020): an online network with a predictor chases an EMA target.

Projector and predictor (the reference's `MLP_BYOL`): Dense(1024, no bias) ->
BN -> ReLU -> Dense(D) (bias only in the predictor). Before each step the
target moves `target <- tau target + (1 - tau) online` (tau =
`config.ema_decay`, 0.996); loss `-(cos(p1, z2') + cos(p2, z1')) / 2` with
`z'` the target's projections. Views: the reference's `BYOLTransform` (blur
always on the first view; blur 0.1 and solarize 0.2 on the second).

Two deliberate differences from the reference (docs/guide/orchestra.md, fidelity table): its
`update_target` computes `(1 - tau) target + tau online` (the target then
copies the online network); here the EMA is BYOL's. Its projector's output
width is the backbone's (512 for ResNet-18); here it is `projection_dim`, so
the predictor fits any encoder.
"""

from __future__ import annotations

import tensorflow as tf

from tff_orchestra.methods.method import Networks, BatchLossMethod, cosine, mlp
from tff_orchestra.methods.simclr import two_views
from tff_orchestra.orchestra import augment

HIDDEN = 1024  # the reference's MLP_BYOL width


class BYOL(BatchLossMethod):
  name = 'byol'

  def networks(self, encoder_fn, input_shape, config):
    d = config.projection_dim
    predictor = mlp(d, [(HIDDEN, False, 'bn_relu'), (d, True, 'none')], 'predictor')
    return Networks(encoder_fn, input_shape,
                    lambda f: mlp(f, [(HIDDEN, False, 'bn_relu'), (d, False, 'none')], 'projector'),
                    heads={'predictor': predictor}, target=True)

  def views(self, images, seed, config):
    return two_views(images, seed, config, augment.BYOL_VIEW_1, augment.ORCHESTRA_VIEW_2)

  def loss(self, networks, views, config):
    predictor = networks.heads['predictor']
    p1 = predictor(networks.project(views[0]), training=True)
    p2 = predictor(networks.project(views[1]), training=True)
    z1 = tf.stop_gradient(networks.target_project(views[0]))
    z2 = tf.stop_gradient(networks.target_project(views[1]))
    return -(tf.reduce_mean(cosine(p1, z2)) + tf.reduce_mean(cosine(p2, z1))) / 2


METHOD = BYOL()
