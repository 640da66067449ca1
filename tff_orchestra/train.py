"""The training program behind `tff-orchestra train`: data, learner, checkpoints, report.

One run lives in one output directory:

    config.json        the configuration (a resume must match it, rounds aside)
    checkpoints/       round_XXXXX.npz, written atomically; the last two kept
    metrics.json/.csv  one row per completed round, nested names joined by '/'
    partition.txt      the clients' label skew
    evaluation.json/.csv, losses.png, epsilon.png (with DP), evaluation.png

Round 0 is Orchestra's training-free initialisation round; `rounds` counts the
training rounds after it. Clients per round are sampled without replacement
from a generator seeded by (seed, round), so a resumed run samples exactly as
an uninterrupted one; with noise-free aggregators it reproduces it exactly
(DP noise and stochastic rounding draw fresh randomness, as they must).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tqdm import tqdm

from tff_orchestra import data as data_lib
from tff_orchestra import evaluation
from tff_orchestra import orchestra
from tff_orchestra import runtime
from tff_orchestra.aggregators import registry
from tff_orchestra.evaluation import plots
from tff_orchestra.orchestra.features import embed

DATASETS = ('digits', 'cifar10', 'cifar100')
CLIENT_WEIGHTINGS = {
    'examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
    'uniform': tff.learning.ClientWeighting.UNIFORM,
}
CHECKPOINTS_KEPT = 2


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


def sample_clients(client_ids, clients_per_round: int, seed: int, round_num: int) -> list[str]:
  rng = np.random.default_rng([seed, round_num])
  return sorted(rng.choice(list(client_ids), clients_per_round, replace=False).tolist(), key=client_ids.index)


def shuffled(dataset: tf.data.Dataset, seed: tuple[int, ...]) -> tf.data.Dataset:
  """The dataset's elements in an order drawn by numpy from `seed`, the same each iteration.

  Unlike `Dataset.shuffle(seed=...)`, the order does not depend on TensorFlow's
  global seed, which other code in the process may have set: a run repeats in
  any process.
  """
  batches = list(dataset.batch(2**31 - 1))  # all elements in one batch, or none
  if not batches:
    return dataset
  [elements] = batches
  size = int(tf.nest.flatten(elements)[0].shape[0])
  order = np.random.default_rng(seed).permutation(size)
  return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda t: tf.gather(t, order), elements))


def flatten_metrics(metrics, prefix: str = '') -> dict[str, Any]:
  """Nested metrics as `{'a/b/c': number}`."""
  if hasattr(metrics, 'items'):
    flat = {}
    for key, value in metrics.items():
      flat.update(flatten_metrics(value, f'{prefix}{key}/'))
    return flat
  if isinstance(metrics, (list, tuple)) and not metrics:
    return {}
  value = np.asarray(metrics)
  return {prefix[:-1]: value.item() if value.size == 1 else value.tolist()}


# ---- checkpoints and output files -------------------------------------------

def _checkpoint_path(output_dir: str, round_num: int) -> str:
  return os.path.join(output_dir, 'checkpoints', f'round_{round_num:05d}.npz')


def save_checkpoint(output_dir: str, round_num: int, state) -> None:
  """Writes `state` for `round_num` atomically; keeps the last two checkpoints."""
  path = _checkpoint_path(output_dir, round_num)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = path + '.partial'
  with open(temporary, 'wb') as file:
    np.savez(file, *[np.asarray(leaf) for leaf in tf.nest.flatten(state)])
    file.flush()
    os.fsync(file.fileno())
  os.replace(temporary, path)
  for old in sorted(glob.glob(os.path.join(output_dir, 'checkpoints', 'round_*.npz')))[:-CHECKPOINTS_KEPT]:
    os.remove(old)


def latest_checkpoint(output_dir: str) -> Optional[tuple[int, str]]:
  paths = sorted(glob.glob(os.path.join(output_dir, 'checkpoints', 'round_*.npz')))
  if not paths:
    return None
  return int(os.path.basename(paths[-1])[6:11]), paths[-1]


class CorruptCheckpointError(ValueError):
  """A checkpoint file that cannot be read, or does not fit the process state."""


def load_checkpoint(path: str, structure):
  """The state saved in `path`, packed as `structure`; `CorruptCheckpointError` names a bad file."""
  expected = tf.nest.flatten(structure)
  try:
    with np.load(path) as arrays:
      leaves = [arrays[f'arr_{i}'] for i in range(len(arrays.files))]
  except Exception as error:  # pylint: disable=broad-except  (zip, pickle and OS errors alike)
    raise CorruptCheckpointError(f'checkpoint {path} is unreadable: {type(error).__name__}: {error}') from error
  if len(leaves) != len(expected) or any(
      np.shape(leaf) != np.shape(want) or np.asarray(leaf).dtype != np.asarray(want).dtype
      for leaf, want in zip(leaves, expected)
  ):
    raise CorruptCheckpointError(f'checkpoint {path} does not hold a state of this run (arrays or shapes differ)')
  return tf.nest.pack_sequence_as(structure, leaves)


def restore_checkpoint(output_dir: str, structure, newest_round: int) -> tuple[int, Any]:
  """The newest readable checkpoint at or before `newest_round`: (round, state).

  A corrupt checkpoint is reported (on stderr, naming it) and the previous one
  is used; `ConfigError` if none is readable.
  """
  paths = sorted(glob.glob(os.path.join(output_dir, 'checkpoints', 'round_*.npz')), reverse=True)
  problems = []
  for path in paths:
    round_num = int(os.path.basename(path)[6:11])
    if round_num > newest_round:
      continue
    try:
      state = load_checkpoint(path, structure)
    except CorruptCheckpointError as error:
      problems.append(str(error))
      tqdm.write(f'warning: {error}; trying the previous checkpoint', file=sys.stderr)
      continue
    return round_num, state
  raise ConfigError(f'no readable checkpoint in {output_dir}: ' + '; '.join(problems or ['none found']))


def _write_json(path: str, value) -> None:
  temporary = path + '.partial'
  with open(temporary, 'w') as file:
    json.dump(value, file, indent=1, default=float)
  os.replace(temporary, path)


def write_metrics(output_dir: str, rows: list[dict]) -> None:
  """metrics.json and metrics.csv, rewritten whole (a few hundred rows at most)."""
  _write_json(os.path.join(output_dir, 'metrics.json'), rows)
  columns = list(dict.fromkeys(key for row in rows for key in row))
  temporary = os.path.join(output_dir, 'metrics.csv.partial')
  with open(temporary, 'w', newline='') as file:
    writer = csv.DictWriter(file, columns)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(temporary, os.path.join(output_dir, 'metrics.csv'))


def prepare_output_dir(config: TrainConfig, resume: bool) -> tuple[int, list[dict]]:
  """Starts a run in a new directory, or continues the one there with `resume`.

  Returns (next round, metric rows kept). Continuing a finished run trains no
  more rounds (unless `rounds` grew) and evaluates again.
  """
  config_path = os.path.join(config.output_dir, 'config.json')
  if not os.path.exists(config_path):
    os.makedirs(config.output_dir, exist_ok=True)
    _write_json(config_path, dataclasses.asdict(config))
    return 0, []
  if not resume:
    raise ConfigError(f'{config.output_dir} already holds a run; pass --resume to continue it, or another --output-dir')
  with open(config_path) as file:
    saved = json.load(file)
  saved_config = TrainConfig(
      **{**saved, 'aggregators': tuple(saved['aggregators']), 'plugins': tuple(saved.get('plugins', ()))}
  )
  if saved_config.identity() != config.identity():
    changed = sorted(k for k, v in config.identity().items() if saved_config.identity().get(k) != v)
    raise ConfigError(f'{config.output_dir} holds a run with a different configuration ({", ".join(changed)} differ)')
  checkpoint = latest_checkpoint(config.output_dir)
  if checkpoint is None:
    return 0, []
  round_num = checkpoint[0]
  rows = []
  metrics_path = os.path.join(config.output_dir, 'metrics.json')
  if os.path.exists(metrics_path):
    with open(metrics_path) as file:
      rows = [row for row in json.load(file) if row['round'] <= round_num]
  return round_num + 1, rows


# ---- the run -------------------------------------------------------------------

def _postfix(row: dict) -> dict[str, str]:
  shown = {
      'cluster': row.get('client_work/train/cluster_loss'),
      'deg': row.get('client_work/train/degeneracy_loss'),
      'in use': row.get('client_work/global_clustering/clusters_in_use'),
  }
  epsilon = [v for k, v in row.items() if k.endswith('/epsilon')]
  if epsilon:
    shown['eps'] = epsilon[0]
  return {k: f'{v:.3g}' if isinstance(v, float) else str(v) for k, v in shown.items() if v is not None}


def evaluate(config: TrainConfig, split: data_lib.FederatedSplit, initial_weights, final_weights, centroids) -> list[dict]:
  """Orchestra against the random-init encoder and raw pixels on the same split."""
  embed_kwargs = dict(encoder=config.encoder, projection_dim=config.projection_dim)
  common = dict(labels_per_class=config.labels_per_class, seed=config.seed)
  train_features, _ = embed(final_weights, split.train_images, **embed_kwargs)
  test_features, test_projections = embed(final_weights, split.test_images, **embed_kwargs)
  rows = [
      evaluation.evaluate_features(
          'orchestra', train_features, split.train_labels, test_features, split.test_labels,
          centroids=centroids, test_projections=test_projections, **common,
      )
  ]
  random_train, _ = embed(initial_weights, split.train_images, **embed_kwargs)
  random_test, _ = embed(initial_weights, split.test_images, **embed_kwargs)
  rows.append(
      evaluation.evaluate_features(
          'random encoder', random_train, split.train_labels, random_test, split.test_labels, **common
      )
  )
  rows.append(
      evaluation.evaluate_features(
          'raw pixels',
          evaluation.pixel_features(split.train_images), split.train_labels,
          evaluation.pixel_features(split.test_images), split.test_labels,
          **common,
      )
  )
  return rows


def run(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    workers: Optional[Sequence[str]] = None,
    worker_timeout: float = 30.0,
) -> dict[str, Any]:
  """Trains (or resumes) a run and evaluates it. Returns metrics rows and the table.

  `workers` (`'host:port'` addresses of running TFF worker_binaries) run it
  there instead of on a local worker (`runtime.simulation_context`); they are
  not part of the run's identity, so a resumed run may use other workers. A
  worker that stops answering for `worker_timeout` seconds raises
  `runtime.WorkerUnavailableError`; every round before it is checkpointed.
  """
  config.validate()
  split = load_split(config)
  start_round, rows = prepare_output_dir(config, resume)
  out = config.output_dir
  summary = data_lib.format_partition_summary(data_lib.partition_summary(split.train_labels, split.partitions))
  with open(os.path.join(out, 'partition.txt'), 'w') as file:
    file.write(summary + '\n')

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', UserWarning)
    factory = build_aggregator(config)
  for warning in caught:
    tqdm.write(f'note: {warning.message}')

  input_shape = split.train_images.shape[1:]
  with runtime.simulation_context(workers=workers, connect_timeout=worker_timeout):
    process = orchestra.build_orchestra_process(
        input_shape, encoder=config.encoder, config=config.orchestra_config(),
        client_weighting=CLIENT_WEIGHTINGS[config.client_weighting],
        model_update_aggregation_factory=factory,
    )
    initial_state = process.initialize()
    state = initial_state
    if start_round > 0:
      restored_round, state = restore_checkpoint(out, initial_state, start_round - 1)
      start_round = restored_round + 1
      rows = [row for row in rows if row['round'] <= restored_round]
    final_round = config.rounds
    bar = tqdm(total=final_round + 1, initial=start_round, desc='rounds', disable=not progress, unit='round')
    for round_num in range(start_round, final_round + 1):
      clients = sample_clients(split.client_ids, config.clients_per_round, config.seed, round_num)
      datasets = [
          orchestra.prepare_client_dataset(
              shuffled(
                  split.client_data.create_tf_dataset_for_client(cid),
                  (config.seed, round_num, split.client_ids.index(cid)),
              ),
              config.batch_size,
          )
          for cid in clients
      ]
      started = time.perf_counter()
      output = process.next(state, datasets)
      state = output.state
      row = {'round': round_num, 'seconds': time.perf_counter() - started, **flatten_metrics(output.metrics)}
      save_checkpoint(out, round_num, state)
      rows.append(row)
      write_metrics(out, rows)
      bar.set_postfix(_postfix(row))
      bar.update(1)
    bar.close()
    table = evaluate(
        config, split, process.get_model_weights(initial_state), process.get_model_weights(state),
        orchestra.global_centroids(state),
    )

  evaluation.write_table(table, os.path.join(out, 'evaluation'))
  plots.plot_losses(rows, os.path.join(out, 'losses.png'))
  epsilon_keys = [k for k in rows[-1] if k.endswith('epsilon')]
  if epsilon_keys:
    plots.plot_epsilon(rows, epsilon_keys[0], os.path.join(out, 'epsilon.png'))
  plots.plot_evaluation(table, os.path.join(out, 'evaluation.png'))
  return {'rows': rows, 'table': table, 'partition': summary}
