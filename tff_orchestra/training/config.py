"""A run's configuration: `TrainConfig`, its checks, and what it names (plugins, aggregator, data).

`rounds` may grow on `--resume`; every other field is the run's identity.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import tensorflow_federated as tff

from tff_orchestra import data as data_lib
from tff_orchestra import orchestra
from tff_orchestra.aggregators import registry

DATASETS = ('digits', 'cifar10', 'cifar100')
CLIENT_WEIGHTINGS = {
    'examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
    'uniform': tff.learning.ClientWeighting.UNIFORM,
}


class ConfigError(ValueError):
  """A bad configuration or output directory: reported as one line by the CLI."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a run. `rounds` may grow on `--resume`; nothing else may change."""

  output_dir: str
  dataset: str = 'digits'
  data_dir: Optional[str] = None
  num_clients: int = 10
  alpha: float = 0.1
  rounds: int = 20
  clients_per_round: int = 10
  seed: int = 0
  encoder: str = 'small_cnn'
  aggregators: tuple[str, ...] = ()
  plugins: tuple[str, ...] = ()  # modules that register aggregators or encoders
  client_weighting: str = 'examples'
  batch_size: int = 16
  # The learner's hyperparameters, defaulting to OrchestraConfig's (the reference's).
  local_epochs: int = orchestra.OrchestraConfig.local_epochs
  projection_dim: int = orchestra.OrchestraConfig.projection_dim
  num_global_clusters: int = orchestra.OrchestraConfig.num_global_clusters
  num_local_clusters: int = orchestra.OrchestraConfig.num_local_clusters
  memory_size: int = orchestra.OrchestraConfig.memory_size
  client_learning_rate: float = orchestra.OrchestraConfig.client_learning_rate
  global_clustering_steps: int = orchestra.OrchestraConfig.global_clustering_steps
  min_crop_area: float = orchestra.OrchestraConfig.min_crop_area
  flip: bool = orchestra.OrchestraConfig.flip
  labels_per_class: int = 10

  def validate(self) -> None:
    load_plugins(self.plugins)
    if self.dataset not in DATASETS:
      raise ConfigError(f'unknown dataset {self.dataset!r}; choose one of {", ".join(DATASETS)}')
    if self.dataset != 'digits' and not self.data_dir:
      raise ConfigError(f'dataset {self.dataset} needs --data-dir with the CIFAR archive (nothing is downloaded)')
    if not self.alpha > 0:
      raise ConfigError(f'alpha must be > 0, got {self.alpha}')
    for name in ('num_clients', 'rounds', 'clients_per_round', 'batch_size', 'local_epochs', 'labels_per_class'):
      if getattr(self, name) < 1:
        raise ConfigError(f'{name} must be >= 1, got {getattr(self, name)}')
    if self.clients_per_round > self.num_clients:
      raise ConfigError(
          f'clients per round ({self.clients_per_round}) cannot exceed the number of clients ({self.num_clients})'
      )
    if self.client_weighting not in CLIENT_WEIGHTINGS:
      raise ConfigError(f'client weighting must be one of {", ".join(CLIENT_WEIGHTINGS)}, got {self.client_weighting!r}')
    if self.encoder not in orchestra.ENCODERS:
      raise ConfigError(f'unknown encoder {self.encoder!r}; choose one of {", ".join(sorted(orchestra.ENCODERS))}')
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)  # `run` shows them once.
      build_aggregator(self)
    self.orchestra_config()

  def orchestra_config(self) -> orchestra.OrchestraConfig:
    try:
      return orchestra.OrchestraConfig(
          num_global_clusters=self.num_global_clusters,
          num_local_clusters=self.num_local_clusters,
          memory_size=self.memory_size,
          projection_dim=self.projection_dim,
          local_epochs=self.local_epochs,
          client_learning_rate=self.client_learning_rate,
          global_clustering_steps=self.global_clustering_steps,
          min_crop_area=self.min_crop_area,
          flip=self.flip,
          max_clients_per_round=self.clients_per_round,
          seed=self.seed,
      )
    except ValueError as error:
      raise ConfigError(str(error)) from error

  def identity(self) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    fields = dataclasses.asdict(self)
    fields.pop('rounds')
    fields.pop('output_dir')
    fields['aggregators'] = list(fields['aggregators'])
    fields['plugins'] = list(fields['plugins'])
    return fields


def load_plugins(modules: Sequence[str]) -> None:
  """Imports the user's modules that register aggregators or encoders (`--plugin`)."""
  for module in modules:
    try:
      importlib.import_module(module)
    except Exception as error:  # pylint: disable=broad-except  (any failure of the user's module)
      raise ConfigError(f'plugin {module!r} cannot be imported: {type(error).__name__}: {error}') from error


def build_aggregator(config: TrainConfig):
  """The run's model aggregator: its `--aggregator` specs, chained (none: `MeanFactory`)."""
  context = registry.RunContext(clients_per_round=config.clients_per_round, seed=config.seed)
  try:
    return registry.build_model_aggregator(config.aggregators, context)
  except ValueError as error:
    raise ConfigError(str(error)) from error


def load_split(config: TrainConfig) -> data_lib.FederatedSplit:
  try:
    if config.dataset == 'digits':
      return data_lib.digits_client_data(config.num_clients, config.alpha, config.seed)
    num_classes = 10 if config.dataset == 'cifar10' else 100
    return data_lib.cifar_client_data(config.data_dir, num_classes, config.num_clients, config.alpha, config.seed)
  except (ValueError, FileNotFoundError) as error:
    raise ConfigError(str(error)) from error
