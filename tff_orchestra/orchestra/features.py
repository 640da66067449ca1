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
  images = np.asarray(images, np.float32)
  config = config or OrchestraConfig(projection_dim=projection_dim)
  networks = _networks_with(model_weights, images.shape[1:], encoder, method, config)

  @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32)])
  def forward(batch):
    features = networks.backbone(augment.normalize(batch), training=False)
    projections = tf.math.l2_normalize(networks.projector(features, training=False), axis=1)
    return features, projections

  return _batched(forward, images, batch_size)


def view_projections(
    model_weights: tff.learning.models.ModelWeights,
    images: np.ndarray,
    *,
    encoder: Union[str, EncoderFn],
    method: Union[str, 'SelfSupervisedMethod'] = 'orchestra',
    config: Optional[OrchestraConfig] = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
  """L2-normalised online projections of two views of each image (inference mode), for alignment and uniformity.

  The views are the reference's `SimCLRTransform` (its model-selection
  views), adapted by `config`'s crop and flip settings, drawn from `seed`.
  """
  images = np.asarray(images, np.float32)
  config = config or OrchestraConfig()
  networks = _networks_with(model_weights, images.shape[1:], encoder, method, config)
  spec = augment.ORCHESTRA_VIEW_1.adapted(min_crop_area=config.min_crop_area, flip=config.flip)

  @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32), tf.TensorSpec([2], tf.int64)])
  def forward(batch, batch_seed):
    project = lambda view: tf.math.l2_normalize(networks.project(view, training=False), axis=1)  # noqa: E731
    return project(augment.view(batch, batch_seed + [1, 0], spec)), project(augment.view(batch, batch_seed + [2, 0], spec))

  return _batched(lambda batch, index: forward(batch, tf.constant([seed, index], tf.int64)), images, batch_size,
                  with_index=True)


def _networks_with(model_weights, input_shape, encoder, method, config):
  """The method's networks built eagerly, holding `model_weights`."""
  from tff_orchestra.methods import method as method_lib  # pylint: disable=import-outside-toplevel

  networks = method_lib.resolve_method(method).networks(resolve_encoder(encoder), input_shape, config)
  tf.nest.map_structure(lambda v, w: v.assign(w), networks.model_weights(),
                        tff.learning.models.ModelWeights(*model_weights))
  return networks


def _batched(forward, images: np.ndarray, batch_size: int, with_index: bool = False) -> tuple[np.ndarray, np.ndarray]:
  firsts, seconds = [], []
  for index, start in enumerate(range(0, len(images), batch_size)):
    batch = tf.constant(images[start:start + batch_size])
    first, second = forward(batch, index) if with_index else forward(batch)
    firsts.append(first.numpy())
    seconds.append(second.numpy())
  return np.concatenate(firsts), np.concatenate(seconds)
