"""The Orchestra networks: encoder, projector, degeneracy head, EMA target.

* Backbone `f`: any Keras model mapping a batch of images to feature vectors.
  `small_cnn` suits 8x8 and 28x28 images; `resnet18` is the CIFAR ResNet-18
  (3x3 stride-1 stem, no max-pool, 512-d pooled feature) for 32x32.
* Projector `g`: Dense(D, no bias) -> BatchNorm -> ReLU -> Dense(D, no bias)
  -> BatchNorm without scale and centre (the reference's
  `projection_MLP_orchestra`).
* Degeneracy head: Dense(4) on the *un-normalised* projector output.
* Every BatchNorm is PyTorch's (epsilon 1e-5, momentum 0.1), as the
  reference's layers: `batch_norm`.
* Target network: a copy of backbone + projector, never trained by gradients.

`OrchestraNetworks.model_weights()` lays the variables out as TFF's
`ModelWeights`: `trainable` holds the online backbone, projector and head;
`non_trainable` holds the online BatchNorm statistics and every target
variable. Both parts change on clients, and both travel as the model update.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
import tensorflow_federated as tff

EncoderFn = Callable[[Sequence[int]], tf.keras.Model]
NUM_ROTATIONS = 4


def batch_norm(**kwargs) -> tf.keras.layers.BatchNormalization:
  """BatchNorm as PyTorch's default `BatchNorm1d/2d` (the reference's): epsilon 1e-5, momentum 0.1 (Keras 0.9)."""
  return tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, **kwargs)


def small_cnn(input_shape: Sequence[int], width: int = 32) -> tf.keras.Model:
  """Three conv-BN-ReLU blocks (strides 1, 2, 2) and global average pooling."""
  inputs = tf.keras.Input(shape=tuple(input_shape))
  x = inputs
  for filters, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
    x = tf.keras.layers.Conv2D(filters, 3, strides=stride, padding='same', use_bias=False)(x)
    x = batch_norm()(x)
    x = tf.keras.layers.ReLU()(x)
  outputs = tf.keras.layers.GlobalAveragePooling2D()(x)
  return tf.keras.Model(inputs, outputs, name='small_cnn')


def _basic_block(x: tf.Tensor, filters: int, stride: int) -> tf.Tensor:
  shortcut = x
  y = tf.keras.layers.Conv2D(filters, 3, strides=stride, padding='same', use_bias=False)(x)
  y = batch_norm()(y)
  y = tf.keras.layers.ReLU()(y)
  y = tf.keras.layers.Conv2D(filters, 3, padding='same', use_bias=False)(y)
  y = batch_norm()(y)
  if stride != 1 or x.shape[-1] != filters:
    shortcut = tf.keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
    shortcut = batch_norm()(shortcut)
  return tf.keras.layers.ReLU()(y + shortcut)


def resnet18(input_shape: Sequence[int]) -> tf.keras.Model:
  """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, [2, 2, 2, 2] basic blocks."""
  inputs = tf.keras.Input(shape=tuple(input_shape))
  x = tf.keras.layers.Conv2D(64, 3, padding='same', use_bias=False)(inputs)
  x = batch_norm()(x)
  x = tf.keras.layers.ReLU()(x)
  for filters, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
    x = _basic_block(x, filters, stride)
    x = _basic_block(x, filters, 1)
  outputs = tf.keras.layers.GlobalAveragePooling2D()(x)
  return tf.keras.Model(inputs, outputs, name='resnet18')


# Encoders by name (`encoder=`, `--encoder`); `register_encoder` adds a user's.
ENCODERS: dict[str, EncoderFn] = {'small_cnn': small_cnn, 'resnet18': resnet18}


def register_encoder(name: str, encoder_fn: EncoderFn, *, replace: bool = False) -> EncoderFn:
  """Makes `name` usable as `encoder=` and `--encoder` (load it with `--plugin`); returns `encoder_fn`.

  `encoder_fn(input_shape)` returns a Keras model mapping a batch of images to
  feature vectors.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f'name must be a Python identifier, got {name!r}')
  if name in ENCODERS and not replace:
    raise ValueError(f'encoder {name!r} is already registered; pass replace=True to replace it')
  if not callable(encoder_fn):
    raise TypeError(f'encoder_fn must be a callable input_shape -> keras.Model, got {type(encoder_fn).__name__}')
  ENCODERS[name] = encoder_fn
  return encoder_fn


def projector(feature_dim: int, projection_dim: int) -> tf.keras.Model:
  """The Orchestra projector (output not yet L2-normalised)."""
  inputs = tf.keras.Input(shape=(feature_dim,))
  x = tf.keras.layers.Dense(projection_dim, use_bias=False)(inputs)
  x = batch_norm()(x)
  x = tf.keras.layers.ReLU()(x)
  x = tf.keras.layers.Dense(projection_dim, use_bias=False)(x)
  outputs = batch_norm(center=False, scale=False)(x)
  return tf.keras.Model(inputs, outputs, name='projector')


class OrchestraNetworks:
  """Online and target networks plus the degeneracy head, built and ready."""

  def __init__(self, encoder_fn: EncoderFn, input_shape: Sequence[int], projection_dim: int):
    self.input_shape = tuple(input_shape)
    self.backbone = encoder_fn(self.input_shape)
    if len(self.backbone.output_shape) != 2:
      raise ValueError(
          f'encoder must map images to vectors [batch, features], got output shape '
          f'{self.backbone.output_shape}'
      )
    feature_dim = int(self.backbone.output_shape[-1])
    self.projector = projector(feature_dim, projection_dim)
    self.degeneracy_head = tf.keras.Sequential(
        [tf.keras.Input(shape=(projection_dim,)), tf.keras.layers.Dense(NUM_ROTATIONS)], name='degeneracy_head'
    )
    self.target_backbone = encoder_fn(self.input_shape)
    self.target_projector = projector(feature_dim, projection_dim)

  @property
  def online_trainable(self) -> list[tf.Variable]:
    """Variables trained by gradients: online backbone, projector, head."""
    return (
        self.backbone.trainable_variables
        + self.projector.trainable_variables
        + self.degeneracy_head.trainable_variables
    )

  @property
  def ema_pairs(self) -> list[tuple[tf.Variable, tf.Variable]]:
    """(target, online) pairs of the trainable backbone + projector variables."""
    targets = self.target_backbone.trainable_variables + self.target_projector.trainable_variables
    online = self.backbone.trainable_variables + self.projector.trainable_variables
    return list(zip(targets, online))

  @property
  def non_trainable(self) -> list[tf.Variable]:
    """Online BatchNorm statistics and every target variable."""
    return (
        self.backbone.non_trainable_variables
        + self.projector.non_trainable_variables
        + self.target_backbone.variables
        + self.target_projector.variables
    )

  def model_weights(self) -> tff.learning.models.ModelWeights:
    return tff.learning.models.ModelWeights(trainable=self.online_trainable, non_trainable=self.non_trainable)

  def copy_online_to_target(self) -> None:
    for target, online in zip(
        self.target_backbone.variables + self.target_projector.variables,
        self.backbone.variables + self.projector.variables,
    ):
      target.assign(online)

  def online_projection(self, images: tf.Tensor) -> tf.Tensor:
    """Un-normalised online projector output (training mode: updates BN stats)."""
    return self.project(images, training=True)

  def project(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
    """Un-normalised online projector output (as every method's networks give it)."""
    return self.projector(self.backbone(images, training=training), training=training)

  def target_projection(self, images: tf.Tensor) -> tf.Tensor:
    """L2-normalised target projection (training mode, as in the reference)."""
    z = self.target_projector(self.target_backbone(images, training=True), training=True)
    return tf.math.l2_normalize(z, axis=1)
