"""A run's configuration: one tree of sections, declared once; what it names (plugins, aggregator, data).

`TrainConfig` holds the sections below; each field is declared with
`settings.setting`, so its check, its `tff-orchestra train` flag and its key
in a run file (`--config run.toml`, and the `config.toml` every run writes)
all come from that one line. Adding a hyperparameter is adding a field.

On `--resume`, `run.output_dir`, `run.rounds` (it may grow) and the whole
`[runtime]` section may differ from the saved run; any other difference is an
error that names it.

No TensorFlow at import: the command line builds its flags from this module;
what needs TFF (the data, the aggregator, the encoders) is imported when used.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from tff_orchestra import settings
from tff_orchestra.orchestra.config import OrchestraConfig
from tff_orchestra.runtime import addresses
from tff_orchestra.settings import ConfigError, InvalidSetting, integer, non_empty, number, one_of, setting

if TYPE_CHECKING:
  from tff_orchestra import data as data_lib

# Above this, a (epsilon, delta) guarantee bounds almost nothing (e**10 > 20,000 times more likely).
MEANINGFUL_EPSILON = 10.0
DATASETS = ('digits', 'cifar10', 'cifar100')
CLIENT_WEIGHTINGS = ('examples', 'uniform')  # tff.learning.ClientWeighting.NUM_EXAMPLES, UNIFORM
# What a resumed run may change: where it lives, how far it goes, where it runs.
MAY_DIFFER_ON_RESUME = ('run.output_dir', 'run.rounds', 'runtime')


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The run: where it writes, how many rounds, how many clients a round, its seed."""

  output_dir: str = setting(help='where config, checkpoints, metrics and plots go', check=non_empty)
  rounds: int = setting(20, help='training rounds after the initialisation round 0 (may grow on --resume)',
                        check=integer(1))
  clients_per_round: int = setting(10, help='clients sampled, without replacement, for each round', check=integer(1))
  seed: int = setting(0, help='seed of the partition, sampling, initialisation and evaluation', check=integer(0))
  plugins: tuple[str, ...] = setting((), help='a module to import first; it may register aggregators and encoders',
                                     flag='plugin')

  def __post_init__(self):
    settings.check_fields(self)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The federated data: which dataset, split across how many clients, how skewed."""

  dataset: str = setting('digits', help='digits (ships with scikit-learn), cifar10 or cifar100', check=one_of(*DATASETS))
  data_dir: Optional[str] = setting(None, help='folder with the CIFAR python archive (cifar-10-python.tar.gz, ...)')
  num_clients: int = setting(10, help='clients the training images are split across', check=integer(1),
                             aliases=('--clients',))
  alpha: float = setting(0.1, help='Dirichlet concentration of the label skew (smaller: more skewed)',
                         check=number(above=0))
  batch_size: int = setting(16, help="clients' batch size", check=integer(1))

  def __post_init__(self):
    settings.check_fields(self)
    if self.dataset != 'digits' and not self.data_dir:
      raise InvalidSetting(
          'DataConfig.data_dir', f'must name the folder with the {self.dataset} archive (nothing is downloaded)', None
      )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The method and the encoder it trains; the hyperparameters (shared by every method) are [orchestra]."""

  method: str = setting('orchestra', check=non_empty,
                        help='orchestra, simclr, byol, simsiam, specloss, rotation, or a name a plugin registers')
  encoder: str = setting('small_cnn', help='small_cnn (8x8, 28x28), resnet18 (32x32), or a name a plugin registers',
                         check=non_empty)

  def __post_init__(self):
    settings.check_fields(self)


@dataclasses.dataclass(frozen=True)
class AggregationConfig:
  """How the server aggregates the model updates."""

  aggregators: tuple[str, ...] = setting(
      (), flag='aggregator',
      help='a stage NAME[:KEY=VALUE,...] of the model-update aggregation chain (repeat: chained in order, '
      'client to server; the chain yields the mean), e.g. cluster_quality:num_clusters=4; every name with its keys, '
      'their defaults and an example: tff-orchestra aggregators; none given: tff.aggregators.MeanFactory()',
  )
  centroid_aggregator: str = setting(
      '',
      help='private centroids: a stage NAME[:KEY=VALUE,...] that yields the sum (e.g. gaussian_noise:'
      'noise_multiplier=1.0,clip=2.0,output=sum) through which clients send per-centroid projection sums instead '
      'of their local centroids and loss sums; empty: the reference way, in the clear',
  )
  client_weighting: str = setting(
      'examples', check=one_of(*CLIENT_WEIGHTINGS),
      help='weight of a client update: examples (those in its full batches) or uniform (use uniform under DP noise)',
  )

  def __post_init__(self):
    settings.check_fields(self)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """The evaluation of the trained encoder."""

  labels_per_class: int = setting(10, help='labels per class the few-label probe learns from', check=integer(1))

  def __post_init__(self):
    settings.check_fields(self)


def _worker_addresses(text: str) -> tuple[str, ...]:
  try:
    return tuple(addresses.parse_worker_addresses(text))
  except ValueError as error:
    raise ValueError(str(error).removeprefix('workers: ')) from error


def _check_worker_addresses(addresses: tuple[str, ...]) -> Optional[str]:
  try:
    if addresses:
      _worker_addresses(','.join(addresses))
  except ValueError as error:
    return str(error)
  return None


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Where and how the run executes: not saved with the run, and free to change on --resume."""

  workers: tuple[str, ...] = setting(
      (), parse=_worker_addresses, check=_check_worker_addresses,
      help="TFF worker_binaries to run on, 'HOST:PORT,HOST:PORT' (clients split across them); default: a local one",
  )
  worker_timeout: float = setting(
      30.0, check=number(above=0),
      help='seconds a remote worker may not answer before the run stops with an error naming it',
  )
  progress: bool = setting(True, help='a progress bar')

  def __post_init__(self):
    settings.check_fields(self)


def _section(cls):
  return dataclasses.field(default_factory=cls)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything `tff-orchestra train` needs, by section. `TrainConfig.build(output_dir=..., rounds=...)` for short."""

  run: RunConfig
  data: DataConfig = _section(DataConfig)
  model: ModelConfig = _section(ModelConfig)
  orchestra: OrchestraConfig = _section(OrchestraConfig)
  aggregation: AggregationConfig = _section(AggregationConfig)
  evaluation: EvaluationConfig = _section(EvaluationConfig)
  runtime: RuntimeConfig = _section(RuntimeConfig)

  def __post_init__(self):
    for name, section in settings.sections(type(self)).items():
      if not isinstance(getattr(self, name), section):
        raise TypeError(f'TrainConfig.{name} must be a {section.__name__}, got {type(getattr(self, name)).__name__}')
      derived = {
          field.name: self.value(field.metadata['derived'])
          for field in dataclasses.fields(section) if field.metadata.get('derived')
      }
      if derived:
        object.__setattr__(self, name, dataclasses.replace(getattr(self, name), **derived))
    if self.run.clients_per_round > self.data.num_clients:
      raise InvalidSetting(
          'run.clients_per_round', f'cannot exceed data.num_clients ({self.data.num_clients})',
          self.run.clients_per_round,
      )

  def value(self, path: str) -> Any:
    """The setting at `'section.name'` (`'run.seed'`)."""
    section, name = path.split('.')
    return getattr(getattr(self, section), name)

  @classmethod
  def build(cls, **values: Any) -> 'TrainConfig':
    """A config from settings named by field alone (`num_clients=3`), each in the section that declares it."""
    return settings.from_mapping(cls, {}, _paths(cls, values))

  def replace(self, **values: Any) -> 'TrainConfig':
    """This config with settings named by field alone replaced."""
    return settings.replace(self, _paths(type(self), values))

  @classmethod
  def from_toml(cls, path: str, overrides: Optional[dict[str, Any]] = None) -> 'TrainConfig':
    """The config a TOML run file describes, with `{'section.field': value}` overrides (the CLI's flags)."""
    try:
      mapping = settings.load_toml(path)
    except (OSError, settings.TOMLDecodeError) as error:
      raise ConfigError(f'{path}: {error}') from error
    try:
      return settings.from_mapping(cls, mapping, overrides)
    except InvalidSetting:
      raise  # named by its path in the file; the CLI adds the file's name
    except ConfigError as error:
      raise ConfigError(f'{path}: {error}') from error

  def to_toml(self) -> str:
    """The run file that repeats this run ([runtime] left out: it says where it ran, not what)."""
    header = (
        'tff-orchestra train --config <this file> repeats this run (--output-dir elsewhere: a new copy;\n'
        '--resume: continue it). [runtime] is not saved: pass --workers etc. again if you need them.'
    )
    return settings.dump_toml(settings.to_mapping(self, skip_sections=('runtime',)), header)

  def differences(self, other: 'TrainConfig') -> list[tuple[str, Any, Any]]:
    """`[(path, this value, other value)]` where a resume of one as the other is refused."""
    return settings.differences(self, other, ignore=MAY_DIFFER_ON_RESUME)

  def check_registered(self) -> None:
    """Imports the plugins, then checks the names they may register: the encoder, the method, the aggregators."""
    from tff_orchestra import orchestra  # pylint: disable=import-outside-toplevel

    load_plugins(self.run.plugins)
    if self.model.encoder not in orchestra.ENCODERS:
      raise InvalidSetting(
          'model.encoder', f'must be one of {", ".join(sorted(orchestra.ENCODERS))} (or registered by a plugin)',
          self.model.encoder,
      )
    from tff_orchestra import methods  # pylint: disable=import-outside-toplevel

    if self.model.method not in methods.registered_methods():
      raise InvalidSetting(
          'model.method', f'must be one of {", ".join(sorted(methods.registered_methods()))} (or registered by a plugin)',
          self.model.method,
      )
    if self.aggregation.centroid_aggregator and self.model.method != 'orchestra':
      raise InvalidSetting('aggregation.centroid_aggregator', 'is for Orchestra alone (other methods send no centroids)',
                           self.aggregation.centroid_aggregator)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)  # `run` shows them once.
      build_aggregator(self)
      build_centroid_aggregator(self)


def _paths(tree: type, values: dict[str, Any]) -> dict[str, Any]:
  by_name = {path.split('.')[1]: path for path in settings.leaves(tree)}
  unknown = sorted(set(values) - set(by_name))
  if unknown:
    raise TypeError(f'unknown setting {", ".join(unknown)}; the settings are {", ".join(by_name)}')
  return {by_name[name]: value for name, value in values.items()}


def load_plugins(modules: Sequence[str]) -> None:
  """Imports the user's modules that register aggregators or encoders (`--plugin`)."""
  for module in modules:
    try:
      importlib.import_module(module)
    except Exception as error:  # pylint: disable=broad-except  (any failure of the user's module)
      raise ConfigError(f'plugin {module!r} cannot be imported: {type(error).__name__}: {error}') from error


# Where each field of `registry.RunContext` comes from in a run; `client_sampling` is not
# a setting: the program always draws clients_per_round of num_clients without replacement.
RUN_CONTEXT_SETTINGS = {'clients_per_round': 'run.clients_per_round', 'num_clients': 'data.num_clients', 'seed': 'run.seed'}


def run_context(config: TrainConfig):
  """What the run's aggregator stages take from the run (`registry.RunContext`)."""
  from tff_orchestra.aggregators import registry  # pylint: disable=import-outside-toplevel

  return registry.RunContext(**{field: config.value(path) for field, path in RUN_CONTEXT_SETTINGS.items()})


def build_centroid_aggregator(config: TrainConfig):
  """The run's centroid aggregator (`aggregation.centroid_aggregator`), or None for the reference way."""
  from tff_orchestra.aggregators import registry  # pylint: disable=import-outside-toplevel

  if not config.aggregation.centroid_aggregator:
    return None
  try:
    return registry.build_stage(config.aggregation.centroid_aggregator, run_context(config))
  except ValueError as error:
    raise ConfigError(str(error)) from error


def centroid_sums_type(config: TrainConfig):
  """What a client sends through the centroid aggregator: per global centroid, projection sums and masses."""
  import tensorflow_federated as tff  # pylint: disable=import-outside-toplevel

  k, d = config.orchestra.num_global_clusters, config.orchestra.projection_dim
  return tff.to_type(collections.OrderedDict(sums=(np.float32, [k, d]), masses=(np.float32, [k])))


def build_aggregator(config: TrainConfig):
  """The run's model aggregator: its `--aggregator` specs, chained (none: `MeanFactory`)."""
  from tff_orchestra.aggregators import registry  # pylint: disable=import-outside-toplevel

  context = run_context(config)
  try:
    return registry.build_model_aggregator(config.aggregation.aggregators, context)
  except ValueError as error:
    raise ConfigError(str(error)) from error


def check_split(config: TrainConfig, split: data_lib.FederatedSplit) -> None:
  """Checks the settings that depend on the data, before any training."""
  classes, counts = np.unique(split.train_labels, return_counts=True)
  wanted = config.evaluation.labels_per_class
  if wanted > counts.min():
    raise InvalidSetting(
        'evaluation.labels_per_class',
        f'cannot exceed the training images of the smallest class ({counts.min()} of class {classes[counts.argmin()]})',
        wanted,
    )


def noise_stages(config: TrainConfig) -> list[tuple[str, Any]]:
  """(spec, factory) for each differentially private stage of the run's aggregator.

  Such a stage (`GaussianNoise`, `DistributedDiscreteGaussian`, or a user's)
  declares `differentially_private` and offers `epsilon_after(rounds,
  value_type)`, `noised_channel_type(value_type)`, `noise_multiplier`,
  `placement`, `target_delta` and `max_epsilon`.
  """
  from tff_orchestra.aggregators import registry  # pylint: disable=import-outside-toplevel

  context = run_context(config)
  stages = [(spec, registry.build_stage(spec, context)) for spec in config.aggregation.aggregators]
  if config.aggregation.centroid_aggregator:
    spec = config.aggregation.centroid_aggregator
    stages.append((spec, registry.build_stage(spec, context)))
  return [(spec, stage) for spec, stage in stages if getattr(stage, 'differentially_private', False)]


def stage_value_type(config: TrainConfig, spec: str, update_type: Any) -> Any:
  """What the DP stage of `spec` sees: the centroid sums for the centroid aggregator, else the model update."""
  return centroid_sums_type(config) if spec == config.aggregation.centroid_aggregator else update_type


def privacy_notes(config: TrainConfig, update_type: Any) -> list[str]:
  """One line for each DP stage whose guarantee after the run's rounds says little.

  `update_type`: the model update's TFF type (the integer mechanisms' epsilon depends on its size).
  """
  rounds = config.run.rounds + 1  # round 0 goes through the aggregator too
  notes = []
  for spec, stage in noise_stages(config):
    if not stage.noise_multiplier > 0:
      notes.append(f'{spec}: noise_multiplier 0 sends no noise: no privacy guarantee (epsilon = inf)')
      continue
    epsilon = stage.epsilon_after(rounds, stage_value_type(config, spec, update_type))
    if not epsilon <= MEANINGFUL_EPSILON:
      notes.append(
          f'{spec}: epsilon after {rounds} rounds will be {epsilon:.3g} at delta {stage.target_delta:g}, '
          f'above {MEANINGFUL_EPSILON:g}, where a guarantee says little: raise noise_multiplier or lower rounds'
      )
  return notes


def noise_description(config: TrainConfig) -> Optional[str]:
  """The run's noise on the model update ('gaussian_noise (central, z = 1)'), or None without a noised stage."""
  noised = [(spec, stage) for spec, stage in noise_stages(config) if stage.noise_multiplier > 0]
  if not noised:
    return None
  return ', '.join(f'{spec.partition(":")[0]} ({s.placement}, z = {s.noise_multiplier:g})' for spec, s in noised)


def rounds_within_budget(config: TrainConfig, update_type: Any) -> tuple[Optional[int], Optional[str]]:
  """How many rounds (round 0 included) the run's DP stages with `max_epsilon` allow, and which stage stops it.

  (None, None) when no stage has a budget. Every round of the run goes
  through the aggregator, so after n rounds each stage has spent n rounds'
  epsilon (`epsilon_after`, which the in-graph accountant equals); the stage
  itself withholds a round beyond its budget too. `update_type` as for
  `privacy_notes`.

  Raises:
    ConfigError: A budget too small for even round 0.
  """
  allowed, stopper = None, None
  for spec, stage in noise_stages(config):
    budget = stage.max_epsilon
    if budget is None:
      continue

    def spent(rounds, stage=stage, spec=spec):
      return stage.epsilon_after(rounds, stage_value_type(config, spec, update_type))

    low, high = 0, config.run.rounds + 1  # spent(low) <= budget; find the most rounds within it
    if spent(high) <= budget:
      continue
    while high - low > 1:
      middle = (low + high) // 2
      low, high = (middle, high) if spent(middle) <= budget else (low, middle)
    if low == 0:
      raise ConfigError(
          f'{spec}: max_epsilon {budget:g} is below the epsilon of one round ({spent(1):.3g}): no round can run'
      )
    if allowed is None or low < allowed:
      allowed, stopper = low, spec
  return allowed, stopper


def load_split(config: TrainConfig) -> data_lib.FederatedSplit:
  from tff_orchestra import data as data_lib  # pylint: disable=import-outside-toplevel

  data, seed = config.data, config.run.seed
  try:
    if data.dataset == 'digits':
      return data_lib.digits_client_data(data.num_clients, data.alpha, seed)
    num_classes = 10 if data.dataset == 'cifar10' else 100
    return data_lib.cifar_client_data(data.data_dir, num_classes, data.num_clients, data.alpha, seed)
  except (ValueError, FileNotFoundError) as error:
    raise ConfigError(str(error)) from error
