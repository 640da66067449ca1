"""The run: its output directory, its rounds, and its evaluation (`tff-orchestra train`).

One run lives in one output directory:

    config.toml        the configuration: `tff-orchestra train --config <it>` repeats the run,
                       and a resume must match it (`config.MAY_DIFFER_ON_RESUME` aside)
    checkpoints/       round_XXXXX.npz, written atomically; the last two kept
    metrics.json/.csv  one row per completed round, nested names joined by '/'
    tensorboard/       the same numbers as TensorBoard scalars (`tensorboard --logdir <dir>`)
    partition.txt      the clients' label skew
    privacy_report.json every aggregation that reaches the server, and whether epsilon covers it
    evaluation.json/.csv, losses.png, epsilon.png (with DP), evaluation.png

Round 0 is Orchestra's training-free initialisation round; `rounds` counts the
training rounds after it. Clients per round are sampled without replacement
from a generator seeded by (seed, round), so a resumed run samples exactly as
an uninterrupted one; with noise-free aggregators it reproduces it exactly
(DP noise and stochastic rounding draw fresh randomness, as they must).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from typing import Any

import tensorflow_federated as tff
from tqdm import tqdm

from tff_orchestra import data as data_lib
from tff_orchestra import evaluation
from tff_orchestra import methods
from tff_orchestra import orchestra
from tff_orchestra import runtime
from tff_orchestra.evaluation import plots
from tff_orchestra.orchestra.features import embed, view_projections
from tff_orchestra.training import checkpoints
from tff_orchestra.training import config as config_lib
from tff_orchestra.training import metrics as metrics_lib
from tff_orchestra.training import sampling
from tff_orchestra.training.config import ConfigError, TrainConfig

CONFIG_FILE = 'config.toml'
CLIENT_WEIGHTINGS = {
    'examples': tff.learning.ClientWeighting.NUM_EXAMPLES,
    'uniform': tff.learning.ClientWeighting.UNIFORM,
}


def prepare_output_dir(config: TrainConfig, resume: bool) -> tuple[int, list[dict]]:
  """Starts a run in a new directory, or continues the one there with `resume`.

  Returns (next round, metric rows kept). Continuing a finished run trains no
  more rounds (unless `rounds` grew) and evaluates again.
  """
  out = config.run.output_dir
  config_path = os.path.join(out, CONFIG_FILE)
  checkpoint = checkpoints.latest_checkpoint(out) if os.path.isdir(out) else None
  if not os.path.exists(config_path) or checkpoint is None:
    # A new run; or one that failed or stopped before its first checkpoint,
    # which holds no progress: the retry, corrected or not, starts it afresh.
    if checkpoint is not None:
      raise ConfigError(f'{out} holds checkpoints but no {CONFIG_FILE} (a run of an earlier tff_orchestra?): '
                        'choose another --output-dir')
    try:
      os.makedirs(out, exist_ok=True)
      with open(config_path + '.partial', 'w') as file:
        file.write(config.to_toml())
      os.replace(config_path + '.partial', config_path)
    except OSError as error:
      raise ConfigError(f'--output-dir {out} cannot hold a run: {error.strerror or error}') from error
    return 0, []
  if not resume:
    raise ConfigError(f'{out} already holds a run; pass --resume to continue it, or another --output-dir')
  saved = TrainConfig.from_toml(config_path, {'run.output_dir': out})
  differences = saved.differences(config)
  if differences:
    listed = '; '.join(f'{path}: saved {before!r}, given {after!r}' for path, before, after in differences)
    raise ConfigError(f'{out} holds a run with a different configuration ({listed})')
  round_num = checkpoint[0]
  rows = []
  metrics_path = os.path.join(out, 'metrics.json')
  if os.path.exists(metrics_path):
    with open(metrics_path) as file:
      rows = [row for row in json.load(file) if row['round'] <= round_num]
  return round_num + 1, rows


def evaluate(config: TrainConfig, split: data_lib.FederatedSplit, initial_weights, final_weights, centroids) -> list[dict]:
  """The trained method against the random-init encoder and raw pixels on the same split.

  `centroids`: Orchestra's global centroids (scored as its own clustering), None for other methods.
  """
  embed_kwargs = dict(encoder=config.model.encoder, projection_dim=config.orchestra.projection_dim,
                      method=config.model.method, config=config.orchestra)
  common = dict(labels_per_class=config.evaluation.labels_per_class, seed=config.run.seed)

  def views_of(weights):  # alignment and uniformity on the held-out (test) images, labels unused
    return view_projections(weights, split.test_images, encoder=config.model.encoder, method=config.model.method,
                            config=config.orchestra, seed=config.run.seed)
  train_features, _ = embed(final_weights, split.train_images, **embed_kwargs)
  test_features, test_projections = embed(final_weights, split.test_images, **embed_kwargs)
  rows = [
      evaluation.evaluate_features(
          config.model.method, train_features, split.train_labels, test_features, split.test_labels,
          centroids=centroids, test_projections=test_projections if centroids is not None else None,
          view_projections=views_of(final_weights), **common,
      )
  ]
  random_train, _ = embed(initial_weights, split.train_images, **embed_kwargs)
  random_test, _ = embed(initial_weights, split.test_images, **embed_kwargs)
  rows.append(
      evaluation.evaluate_features(
          'random encoder', random_train, split.train_labels, random_test, split.test_labels,
          view_projections=views_of(initial_weights), **common,
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


def _client_datasets(config: TrainConfig, split: data_lib.FederatedSplit, round_num: int) -> list:
  """The datasets of the round's sampled clients, each in an order drawn from (seed, round, client)."""
  seed = config.run.seed
  return [
      orchestra.prepare_client_dataset(
          sampling.shuffled(
              split.client_data.create_tf_dataset_for_client(cid), (seed, round_num, split.client_ids.index(cid))
          ),
          config.data.batch_size,
      )
      for cid in sampling.sample_clients(split.client_ids, config.run.clients_per_round, seed, round_num)
  ]


def write_privacy_report(config: TrainConfig, process, path: str) -> None:
  """Every aggregation a round sends to the server, and which the run's DP stage covers (`privacy_check.py`).

  With a DP stage, one note says how much of what reaches the
  server its epsilon covers: the model update only.
  """
  from tff_orchestra.aggregators import privacy_check  # pylint: disable=import-outside-toplevel

  from tff_orchestra.aggregators import privacy_accounting  # pylint: disable=import-outside-toplevel

  update_type = process.get_model_weights.type_signature.result
  noise = config_lib.noise_description(config)
  stages = config_lib.noise_stages(config)
  value_types = [config_lib.stage_value_type(config, spec, update_type) for spec, _ in stages]
  noised_types = [stage.noised_channel_type(value_type) for (_, stage), value_type in zip(stages, value_types)]
  found = privacy_check.channels(process.next, noised_types, noise)
  joint = None
  if len(stages) > 1 and all(c.covered_by_epsilon for c in found):
    # Everything a client sends is noised: one epsilon for all of it, if the stages compose.
    rounds = config.run.rounds + 1
    try:
      joint = privacy_accounting.epsilon_of_stages([s for _, s in stages], value_types, rounds, stages[0][1].target_delta)
    except ValueError as error:
      tqdm.write(f'note: privacy: no joint epsilon: {error}')
  privacy_check.write_report(found, path, joint_epsilon=joint, rounds=config.run.rounds + 1)
  if noise:
    tqdm.write(f'note: privacy: {privacy_check.summary(found)}; see {os.path.basename(path)}')
  if joint is not None:
    tqdm.write(f'note: privacy: every aggregation is noised: epsilon {joint:.3g} for all a client sends, '
               f'after {config.run.rounds + 1} rounds')


def _budget_exhausted(row: dict[str, Any]) -> bool:
  """Whether a DP stage withheld this round (its `budget_exhausted` measurement)."""
  return any(value for key, value in row.items() if key.rsplit('/', 1)[-1] == 'budget_exhausted')


class RunInterrupted(Exception):
  """Ctrl-C (SIGINT) during training: the run stopped after round `round_num`, which is checkpointed."""

  def __init__(self, round_num: int):
    super().__init__(f'interrupted after round {round_num}, which is checkpointed')
    self.round_num = round_num


class _StopAfterRound:
  """While training, a first Ctrl-C asks to stop after the current round; a second one stops at once.

  Only in the main thread (where Python delivers signals); elsewhere nothing changes.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self) -> '_StopAfterRound':
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._on_sigint)
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _on_sigint(self, signum, frame):
    if self.requested:
      self.close()
      raise KeyboardInterrupt
    self.requested = True
    tqdm.write('stopping after this round (Ctrl-C again: stop now)')

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
      self._previous = None


def run(config: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
  """Trains (or resumes) a run and evaluates it. Returns metrics rows and the table.

  `config.runtime.workers` (`'host:port'` addresses of running TFF
  worker_binaries) run it there instead of on a local worker
  (`runtime.simulation_context`); a resumed run may use other workers. A worker
  that stops answering for `config.runtime.worker_timeout` seconds raises
  `runtime.WorkerUnavailableError`; every round before it is checkpointed.
  Ctrl-C stops the run after the current round, checkpointed, with
  `RunInterrupted`. A run that fails before its first checkpoint leaves
  nothing that blocks its retry. A DP stage's `max_epsilon`
  ends training after the last round it allows, with a note; the
  evaluation follows.
  """
  config.check_registered()
  split = config_lib.load_split(config)
  config_lib.check_split(config, split)
  start_round, rows = prepare_output_dir(config, resume)
  out = config.run.output_dir
  summary = data_lib.format_partition_summary(data_lib.partition_summary(split.train_labels, split.partitions))
  with open(os.path.join(out, 'partition.txt'), 'w') as file:
    file.write(summary + '\n')

  input_shape = split.train_images.shape[1:]
  workers = config.runtime.workers or None
  with runtime.simulation_context(workers=workers, connect_timeout=config.runtime.worker_timeout):
    # The aggregator's caveats (and its factories' warnings at create()), one line each.
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always', UserWarning)
      process = methods.build_learning_process(
          input_shape, method=config.model.method, encoder=config.model.encoder, config=config.orchestra,
          client_weighting=CLIENT_WEIGHTINGS[config.aggregation.client_weighting],
          model_update_aggregation_factory=config_lib.build_aggregator(config),
          centroid_aggregation_factory=config_lib.build_centroid_aggregator(config),
      )
    for message in dict.fromkeys(str(warning.message) for warning in caught):
      tqdm.write(f'note: {message}')
    update_type = process.get_model_weights.type_signature.result
    rounds_allowed, budget_stage = config_lib.rounds_within_budget(config, update_type)
    for message in config_lib.privacy_notes(config, update_type):
      tqdm.write(f'note: {message}')
    write_privacy_report(config, process, os.path.join(out, 'privacy_report.json'))
    initial_state = process.initialize()
    state = initial_state
    if start_round > 0:
      restored_round, state = checkpoints.restore_checkpoint(out, initial_state, start_round - 1)
      start_round = restored_round + 1
      rows = [row for row in rows if row['round'] <= restored_round]
    final_round = config.run.rounds
    if rounds_allowed is not None:
      final_round = rounds_allowed - 1
      tqdm.write(
          f'note: {budget_stage}: the privacy budget allows rounds 0-{final_round}; training stops after '
          f'round {final_round}, not {config.run.rounds} (the round after would take epsilon above max_epsilon)'
      )
    bar = tqdm(total=final_round + 1, initial=start_round, desc='rounds', disable=not config.runtime.progress,
               unit='round')
    tensorboard = metrics_lib.TensorBoardWriter(out)
    try:
      with _StopAfterRound() as stop:
        for round_num in range(start_round, final_round + 1):
          started = time.perf_counter()
          output = process.next(state, _client_datasets(config, split, round_num))
          state = output.state
          row = {'round': round_num, 'seconds': time.perf_counter() - started, **metrics_lib.flatten_metrics(output.metrics)}
          checkpoints.save_checkpoint(out, round_num, state)
          rows.append(row)
          metrics_lib.write_metrics(out, rows)
          tensorboard.write(row)
          bar.set_postfix(metrics_lib.progress_postfix(row))
          bar.update(1)
          if _budget_exhausted(row):
            tqdm.write(f'note: round {round_num} was withheld by its privacy budget (max_epsilon): training stops here')
            break
          if stop.requested and round_num < final_round:
            raise RunInterrupted(round_num)
    finally:
      bar.close()
      tensorboard.close()
    table = evaluate(
        config, split, process.get_model_weights(initial_state), process.get_model_weights(state),
        orchestra.global_centroids(state) if config.model.method == 'orchestra' else None,
    )

  evaluation.write_table(table, os.path.join(out, 'evaluation'))
  plots.plot_losses(rows, os.path.join(out, 'losses.png'))
  epsilon_keys = [k for k in rows[-1] if k.endswith('epsilon')]
  if epsilon_keys:
    plots.plot_epsilon(rows, epsilon_keys[0], os.path.join(out, 'epsilon.png'))
  plots.plot_evaluation(table, os.path.join(out, 'evaluation.png'))
  return {'rows': rows, 'table': table, 'partition': summary}
