"""What a federated self-supervised method is here, and the registry that makes one usable everywhere.

A method is networks and the process that trains them; most are a loss per
batch over augmented views (`BatchLossMethod`: give `networks`, `views` and
`loss`, the client work follows). Subclass one, register it with
`register_method('name', method)`, and `build_learning_process(method='name')`,
`tff-orchestra train --method name` and a run file's `method = "name"` train
it with any model-update aggregation factory, as the built-in ones
(`orchestra`, `simclr`, `byol`, `simsiam`, `specloss`, `rotation`).

Every method reads its hyperparameters from the one `OrchestraConfig` (as the
reference's methods share its `config.py`): projection width, temperature,
EMA decay, local epochs, batch size, client optimiser, crop and flip settings.
"""

from __future__ import annotations

import abc
from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.orchestra.config import OrchestraConfig
from tff_orchestra.orchestra.model import EncoderFn, batch_norm


class Networks:
  """A method's online networks, and the EMA target of backbone + projector when it has one.

  `model_weights()` lays the variables out as TFF's `ModelWeights`:
  `trainable` is every online trainable variable (backbone, projector,
  `heads`), `non_trainable` the online BatchNorm statistics and every target
  variable, so that all of it travels as the model update.
  """

  def __init__(self, encoder_fn: EncoderFn, input_shape: Sequence[int], projector_fn,
               heads: Optional[dict] = None, target: bool = False):
    self.input_shape = tuple(input_shape)
    self.backbone = encoder_fn(self.input_shape)
    if len(self.backbone.output_shape) != 2:
      raise ValueError(
          f'encoder must map images to vectors [batch, features], got output shape {self.backbone.output_shape}'
      )
    feature_dim = int(self.backbone.output_shape[-1])
    self.projector = projector_fn(feature_dim)
    self.heads = dict(heads or {})
    self.target_backbone = encoder_fn(self.input_shape) if target else None
    self.target_projector = projector_fn(feature_dim) if target else None

  def _online(self) -> list[tf.keras.Model]:
    return [self.backbone, self.projector, *self.heads.values()]

  def _targets(self) -> list[tf.keras.Model]:
    return [m for m in (self.target_backbone, self.target_projector) if m is not None]

  def model_weights(self) -> tff.learning.models.ModelWeights:
    trainable = [v for model in self._online() for v in model.trainable_variables]
    non_trainable = [v for model in self._online() for v in model.non_trainable_variables]
    non_trainable += [v for model in self._targets() for v in model.variables]
    return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)

  @property
  def ema_pairs(self) -> list[tuple[tf.Variable, tf.Variable]]:
    """(target, online) pairs of the trainable backbone + projector variables; empty without a target."""
    if self.target_backbone is None:
      return []
    targets = self.target_backbone.trainable_variables + self.target_projector.trainable_variables
    return list(zip(targets, self.backbone.trainable_variables + self.projector.trainable_variables))

  def copy_online_to_target(self) -> None:
    if self.target_backbone is not None:
      for target, online in zip(self.target_backbone.variables + self.target_projector.variables,
                                self.backbone.variables + self.projector.variables):
        target.assign(online)

  def project(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
    """The online projector's output (not normalised) for normalised images."""
    return self.projector(self.backbone(images, training=training), training=training)

  def target_project(self, images: tf.Tensor) -> tf.Tensor:
    """The target's projection (training mode, as the reference runs it)."""
    return self.target_projector(self.target_backbone(images, training=True), training=True)


def mlp(input_dim: int, layers: Sequence[tuple[int, bool, str]], name: str) -> tf.keras.Model:
  """Dense layers `(width, use_bias, then)`, `then` one of 'bn_relu' (BatchNorm, ReLU), 'bn' (BatchNorm without
  scale and centre) or 'none': the reference's projector and predictor MLPs are such stacks."""
  inputs = tf.keras.Input(shape=(input_dim,))
  x = inputs
  for width, use_bias, then in layers:
    x = tf.keras.layers.Dense(width, use_bias=use_bias)(x)
    if then == 'bn_relu':
      x = tf.keras.layers.ReLU()(batch_norm()(x))
    elif then == 'bn':
      x = batch_norm(center=False, scale=False)(x)
    elif then != 'none':
      raise ValueError(f"then must be 'bn_relu', 'bn' or 'none', got {then!r}")
  return tf.keras.Model(inputs, x, name=name)


def cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """Row-wise cosine similarity."""
  return tf.reduce_sum(tf.math.l2_normalize(a, axis=1) * tf.math.l2_normalize(b, axis=1), axis=1)


class SelfSupervisedMethod(abc.ABC):
  """A federated self-supervised method: the networks it trains and the learning process that trains them."""

  name: str = ''

  @abc.abstractmethod
  def networks(self, encoder_fn: EncoderFn, input_shape: Sequence[int], config: OrchestraConfig) -> Networks:
    """Builds the networks (inside TFF's graphs, and eagerly for evaluation): `backbone`, `projector`,
    `model_weights()`, `copy_online_to_target()`."""

  @abc.abstractmethod
  def build_process(self, input_shape: Sequence[int], **kwargs) -> tff.learning.templates.LearningProcess:
    """The learning process; `kwargs` are `learner.build_learning_process`'s."""


class BatchLossMethod(SelfSupervisedMethod):
  """A method whose client work is a loss per batch: most of them (Orchestra's clustering needs more).

  The client runs, for each batch of each local epoch: `views(images, seed,
  config)`; the EMA update of the target (if `networks` made one); then one
  optimiser step on `loss(networks, views, config)` (weight decay added to
  the gradient), as the reference's `ssl_train`.
  """

  @abc.abstractmethod
  def views(self, images: tf.Tensor, seed: tf.Tensor, config: OrchestraConfig) -> tuple[tf.Tensor, ...]:
    """The batch's augmented, normalised views (and labels, if the loss needs them), from a stateless seed."""

  @abc.abstractmethod
  def loss(self, networks: Networks, views: tuple[tf.Tensor, ...], config: OrchestraConfig) -> tf.Tensor:
    """The scalar loss of one batch."""

  def build_process(self, input_shape: Sequence[int], **kwargs) -> tff.learning.templates.LearningProcess:
    from tff_orchestra.methods import learner  # pylint: disable=import-outside-toplevel
    return learner.build_method_process(self, input_shape, **kwargs)


_REGISTERED: dict[str, SelfSupervisedMethod] = {}
BUILTIN_METHODS = ('orchestra', 'simclr', 'byol', 'simsiam', 'specloss', 'rotation')


def registered_methods() -> dict[str, SelfSupervisedMethod]:
  """`{name: method}`: the built-in methods (imported on first use), then the ones `register_method` added."""
  import importlib  # pylint: disable=import-outside-toplevel
  builtin = {name: importlib.import_module(f'tff_orchestra.methods.{name}').METHOD for name in BUILTIN_METHODS}
  return {**builtin, **_REGISTERED}


def register_method(name: str, method: SelfSupervisedMethod, *, replace: bool = False) -> SelfSupervisedMethod:
  """Makes `name` usable as `method=`, `--method` and a run file's `method` (load it with `--plugin`)."""
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f'name must be a Python identifier, got {name!r}')
  if not isinstance(method, SelfSupervisedMethod):
    raise TypeError(f'method must be a SelfSupervisedMethod, got {type(method).__name__}')
  if (name in _REGISTERED or name in BUILTIN_METHODS) and not replace:
    raise ValueError(f'method {name!r} is already registered; pass replace=True to replace it')
  _REGISTERED[name] = method
  return method


def resolve_method(method) -> SelfSupervisedMethod:
  """A registered name or a `SelfSupervisedMethod`."""
  if isinstance(method, str):
    methods = registered_methods()
    if method not in methods:
      raise ValueError(f'method must be one of {", ".join(sorted(methods))} (or registered), got {method!r}')
    return methods[method]
  if not isinstance(method, SelfSupervisedMethod):
    raise TypeError(f'method must be a registered name or a SelfSupervisedMethod, got {type(method).__name__}')
  return method
