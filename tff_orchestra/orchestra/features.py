"""Features of a trained (or initial) Orchestra model, for evaluation.

Builds the networks eagerly, loads `ModelWeights` (from
`process.get_model_weights(state)`), and runs the online backbone and
projector in inference mode (BatchNorm moving statistics) on the images
normalised as in training (`augment.normalize`, the reference's test transform).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.orchestra import augment
from tff_orchestra.orchestra.learner import resolve_encoder
from tff_orchestra.orchestra.config import OrchestraConfig
from tff_orchestra.orchestra.model import EncoderFn

if TYPE_CHECKING:
  from tff_orchestra.methods.method import SelfSupervisedMethod


def embed(
    model_weights: tff.learning.models.ModelWeights,
    images: np.ndarray,
    *,
    encoder: Union[str, EncoderFn],
    projection_dim: int,
    batch_size: int = 256,
    method: Union[str, 'SelfSupervisedMethod'] = 'orchestra',
    config: Optional[OrchestraConfig] = None,
) -> tuple[np.ndarray, np.ndarray]:
  """(backbone features [N, F], L2-normalised online projections [N, D]) of `images`.

  `method` (a registered name or a `SelfSupervisedMethod`) and `config` (its
  hyperparameters; default `OrchestraConfig(projection_dim=projection_dim)`)
  say which networks the weights belong to.
  """
  from tff_orchestra.methods import method as method_lib  # pylint: disable=import-outside-toplevel

  images = np.asarray(images, np.float32)
  config = config or OrchestraConfig(projection_dim=projection_dim)
  networks = method_lib.resolve_method(method).networks(resolve_encoder(encoder), images.shape[1:], config)
  variables = networks.model_weights()
  tf.nest.map_structure(lambda v, w: v.assign(w), variables, tff.learning.models.ModelWeights(*model_weights))

  @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32)])
  def forward(batch):
    features = networks.backbone(augment.normalize(batch), training=False)
    projections = tf.math.l2_normalize(networks.projector(features, training=False), axis=1)
    return features, projections

  features, projections = [], []
  for start in range(0, len(images), batch_size):
    f, p = forward(tf.constant(images[start:start + batch_size]))
    features.append(f.numpy())
    projections.append(p.numpy())
  return np.concatenate(features), np.concatenate(projections)
