"""One Orchestra learner round in TFF against the same local training in plain TensorFlow.

For each case, in one process:

* `tff`: median wall time of `process.next` (the learner with `MeanFactory`)
  over `--rounds` training rounds after `--warmup` ones, with the worker
  running one client at a time (`max_concurrent_computation_calls=1`), as
  the floor does; `tff concurrent`: the same with TFF's default (all clients
  at once);
* `floor`: the same clients' local training (`LocalTraining`: same model,
  weights, data, seeds and steps) run one after another in plain TensorFlow,
  median over as many repetitions after one warm-up (tracing) pass;
* where the rest goes: the server's global clustering on the same local
  centroids (plain TF); `movement`, a TFF round without any training (weights
  in from Python, broadcast, a zero update per client, `MeanFactory`, weights
  back); and what neither explains (`tff - floor - clustering - movement`:
  building each client's graph, datasets into the executor; negative when
  TFF's graph runs the training faster than the eager floor). Building the
  process and round 0 (first execution: graph loading, no training) are
  reported apart;
* `XLA floor`: the floor with `jit_compile=True` (the learning step compiled
  by XLA; TFF's worker does not compile it, so only plain TF can use it);
* peak memory of this process and of the workers over the case.

Cases: the small CNN on digits (the `tff-orchestra train` defaults, 10 clients)
and ResNet-18 on generated 32x32x3 images. Prints a table and writes JSON.

    python benchmarks/round_cost.py --models small_cnn resnet18
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time
from typing import Callable, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from report import watch_memory, write_report

from tff_orchestra import data as data_lib
from tff_orchestra import orchestra
from tff_orchestra import runtime
from tff_orchestra.orchestra import clustering
from tff_orchestra.orchestra.client_work import LocalTraining


def digits_datasets(num_clients: int, alpha: float, batch_size: int, seed: int) -> list[tf.data.Dataset]:
  """Every client's batched digits, as `tff-orchestra train` partitions them."""
  split = data_lib.digits_client_data(num_clients, alpha, seed)
  return [
      orchestra.prepare_client_dataset(split.client_data.create_tf_dataset_for_client(cid), batch_size)
      for cid in split.client_ids
  ]


def generated_datasets(
    num_clients: int, examples: int, image_shape: Sequence[int], batch_size: int, seed: int
) -> list[tf.data.Dataset]:
  """Uniform random images: enough to time the work, not to learn from."""
  rng = np.random.default_rng(seed)
  return [
      tf.data.Dataset.from_tensor_slices(rng.random((examples, *image_shape), dtype=np.float32)).batch(batch_size)
      for _ in range(num_clients)
  ]


@dataclasses.dataclass
class TffTiming:
  build_seconds: float
  round0_seconds: float
  round_seconds: list[float]
  state: object
  process: tff.learning.templates.LearningProcess


def time_tff_rounds(
    build: Callable[[], tff.learning.templates.LearningProcess],
    datasets: list[tf.data.Dataset],
    warmup: int,
    rounds: int,
) -> TffTiming:
  """Builds the process, runs round 0, `warmup` rounds, then times `rounds` rounds."""
  started = time.perf_counter()
  process = build()
  state = process.initialize()
  build_seconds = time.perf_counter() - started
  started = time.perf_counter()
  state = process.next(state, datasets).state
  round0_seconds = time.perf_counter() - started
  times = []
  for index in range(warmup + rounds):
    started = time.perf_counter()
    state = process.next(state, datasets).state
    if index >= warmup:
      times.append(time.perf_counter() - started)
  return TffTiming(build_seconds, round0_seconds, times, state, process)


def time_plain_rounds(local_training: LocalTraining, weights, datasets, centroids, round_seed, rounds: int):
  """Seconds of each of `rounds` passes over the clients (after one tracing pass), and the last outputs."""
  weights = tf.nest.map_structure(tf.convert_to_tensor, weights)
  centroids = tf.convert_to_tensor(centroids)
  round_seed = tf.constant(round_seed, tf.int64)
  not_initialisation = tf.constant(False)

  def one_round():
    outputs = [local_training(weights, dataset, centroids, not_initialisation, round_seed) for dataset in datasets]
    tf.nest.map_structure(lambda t: t.numpy(), outputs)  # Wait for every result.
    return outputs

  outputs = one_round()
  times = []
  for _ in range(rounds):
    started = time.perf_counter()
    outputs = one_round()
    times.append(time.perf_counter() - started)
  return times, outputs


def time_server_clustering(config: orchestra.OrchestraConfig, centroids, outputs, repeats: int) -> float:
  """Median seconds of the global clustering of these clients' local centroids (plain TF)."""
  local = np.concatenate([local['centroids'].numpy() for _, local, _, _ in outputs if local['valid'].numpy() > 0.5])
  run = tf.function(
      lambda c, z: clustering.global_clustering(
          c, z, temperature=config.temperature, steps=config.global_clustering_steps,
          learning_rate=config.global_clustering_learning_rate, momentum=config.global_clustering_momentum,
          weight_decay=config.global_clustering_weight_decay,
      )
  )
  centroids, local = tf.convert_to_tensor(centroids), tf.convert_to_tensor(local)
  tf.nest.map_structure(lambda t: t.numpy(), run(centroids, local))
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), run(centroids, local))
    times.append(time.perf_counter() - started)
  return statistics.median(times)


def time_weight_movement(weights_type, weights, clients: int, repeats: int) -> float:
  """Median seconds of a round without training, in TFF: the model weights in from
  Python, broadcast to `clients` clients, a zero update from each, `MeanFactory`
  on the updates, the result back to Python. What the runtime and the
  aggregation cost for this model, apart from any client or server work."""
  mean = tff.aggregators.MeanFactory().create(weights_type, tff.TensorType(np.float32))
  zero_update = tff.tensorflow.computation(lambda w: tf.nest.map_structure(tf.zeros_like, w), weights_type)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(np.float32, tff.CLIENTS))
  def move(server_weights, client_weights):
    updates = tff.federated_map(zero_update, tff.federated_broadcast(server_weights))
    return mean.next(mean.initialize(), updates, client_weights).result

  move(weights, [1.0] * clients)
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    move(weights, [1.0] * clients)
    times.append(time.perf_counter() - started)
  return statistics.median(times)


def count_parameters(weights) -> int:
  return int(sum(np.size(v) for v in tf.nest.flatten(weights)))


def measure_case(
    name: str,
    encoder: orchestra.model.EncoderFn,
    input_shape: Sequence[int],
    datasets: list[tf.data.Dataset],
    config: orchestra.OrchestraConfig,
    warmup: int,
    rounds: int,
) -> dict:
  """Every number of one case. TFF runs the clients concurrently (its default)
  and, in a second context, one at a time as the floor does."""
  build = functools.partial(orchestra.build_orchestra_process, input_shape, encoder=encoder, config=config)
  watch_memory().reset()
  with runtime.simulation_context():
    concurrent = time_tff_rounds(build, datasets, warmup, rounds)
  with runtime.simulation_context(max_concurrent_computation_calls=1):
    sequential = time_tff_rounds(build, datasets, warmup, rounds)
    process, state = sequential.process, sequential.state
    weights = process.get_model_weights(state)
    centroids = orchestra.global_centroids(state)
    round_seed = [config.seed, orchestra.round_num(state)]
    optimizer = tff.learning.optimizers.build_sgdm(config.client_learning_rate, config.client_momentum)
    local_training = LocalTraining(config, orchestra.learner.resolve_encoder(encoder), input_shape, optimizer)
    plain_times, outputs = time_plain_rounds(local_training, weights, datasets, centroids, round_seed, rounds)
    xla_training = LocalTraining(dataclasses.replace(config, jit_compile=True),
                                 orchestra.learner.resolve_encoder(encoder), input_shape, optimizer)
    xla_times, _ = time_plain_rounds(xla_training, weights, datasets, centroids, round_seed, rounds)
    clustering_seconds = time_server_clustering(config, centroids, outputs, rounds)
    movement_seconds = time_weight_movement(
        process.get_model_weights.type_signature.result, weights, len(datasets), rounds
    )
  sequential_seconds = statistics.median(sequential.round_seconds)
  floor_seconds = statistics.median(plain_times)
  steps = int(sum(metrics['batches'].numpy() for _, _, metrics, _ in outputs))
  return dict(
      case=name,
      clients=len(datasets),
      parameters=count_parameters(weights),
      local_steps_per_round=steps,
      build_seconds=sequential.build_seconds,
      round0_seconds=sequential.round0_seconds,
      tff_round_seconds=sequential_seconds,
      tff_round_times=sequential.round_seconds,
      tff_concurrent_round_seconds=statistics.median(concurrent.round_seconds),
      tff_concurrent_round_times=concurrent.round_seconds,
      floor_seconds=floor_seconds,
      floor_times=plain_times,
      xla_floor_seconds=statistics.median(xla_times),
      xla_floor_times=xla_times,
      xla_speedup=floor_seconds / statistics.median(xla_times),
      ratio=sequential_seconds / floor_seconds,
      concurrent_ratio=statistics.median(concurrent.round_seconds) / floor_seconds,
      server_clustering_seconds=clustering_seconds,
      weight_movement_seconds=movement_seconds,
      unexplained_seconds=sequential_seconds - floor_seconds - clustering_seconds - movement_seconds,
      **watch_memory().peaks(),
  )


def format_row(row: dict) -> str:
  return (
      f"{row['case']:<22} {row['parameters']:>10,} {row['clients']:>3} clients {row['local_steps_per_round']:>5} steps | "
      f"tff {row['tff_round_seconds']:6.2f} s  floor {row['floor_seconds']:6.2f} s  ratio {row['ratio']:4.2f} | "
      f"tff concurrent {row['tff_concurrent_round_seconds']:6.2f} s  ratio {row['concurrent_ratio']:4.2f} | "
      f"clustering {row['server_clustering_seconds']:5.2f}  movement {row['weight_movement_seconds']:5.2f}  "
      f"unexplained {row['unexplained_seconds']:+6.2f} | build {row['build_seconds']:5.1f}  round 0 {row['round0_seconds']:5.1f} | "
      f"XLA floor {row['xla_floor_seconds']:6.2f} s (speed-up {row['xla_speedup']:4.2f}) | "
      f"peak MiB python {row['python_peak_rss_mib']:.0f} worker {row['worker_peak_rss_mib']:.0f}"
  )


def add_orchestra_arguments(parser: argparse.ArgumentParser) -> None:
  """The learner's hyperparameters (the reference's defaults), the batch size and the seed."""
  defaults = orchestra.OrchestraConfig()
  parser.add_argument('--batch-size', type=int, default=16)
  parser.add_argument('--projection-dim', type=int, default=defaults.projection_dim)
  parser.add_argument('--global-clusters', type=int, default=defaults.num_global_clusters)
  parser.add_argument('--local-clusters', type=int, default=defaults.num_local_clusters)
  parser.add_argument('--memory-size', type=int, default=defaults.memory_size)
  parser.add_argument('--global-clustering-steps', type=int, default=defaults.global_clustering_steps)
  parser.add_argument('--seed', type=int, default=0)


def config_from(args: argparse.Namespace, *, local_epochs: int, digits: bool, **overrides) -> orchestra.OrchestraConfig:
  """The `OrchestraConfig` of `add_orchestra_arguments`' options."""
  return orchestra.OrchestraConfig(
      local_epochs=local_epochs, projection_dim=args.projection_dim, num_global_clusters=args.global_clusters,
      num_local_clusters=args.local_clusters, memory_size=args.memory_size,
      global_clustering_steps=args.global_clustering_steps, seed=args.seed,
      # The digits runs' augmentation (docs/getting-started.md); timing barely depends on it.
      **(dict(flip=False, min_crop_area=0.6) if digits else {}),
      **overrides,
  )


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', nargs='+', choices=('small_cnn', 'resnet18'), default=['small_cnn', 'resnet18'])
  parser.add_argument('--digits-clients', type=int, default=10)
  parser.add_argument('--digits-local-epochs', type=int, default=orchestra.OrchestraConfig.local_epochs)
  parser.add_argument('--resnet-clients', type=int, default=4)
  parser.add_argument('--resnet-examples', type=int, default=64, help='generated 32x32x3 images per client')
  parser.add_argument('--resnet-local-epochs', type=int, default=1)
  parser.add_argument('--alpha', type=float, default=0.1)
  add_orchestra_arguments(parser)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--json', default='benchmarks/results/round_cost.json')
  args = parser.parse_args(argv)
  watch_memory()

  results = []
  for model in args.models:
    if model == 'small_cnn':
      datasets = digits_datasets(args.digits_clients, args.alpha, args.batch_size, args.seed)
      config = config_from(args, local_epochs=args.digits_local_epochs, digits=True)
      row = measure_case('small_cnn on digits', 'small_cnn', (8, 8, 1), datasets, config, args.warmup, args.rounds)
    else:
      datasets = generated_datasets(args.resnet_clients, args.resnet_examples, (32, 32, 3), args.batch_size, args.seed)
      config = config_from(args, local_epochs=args.resnet_local_epochs, digits=False)
      row = measure_case('resnet18 on 32x32', 'resnet18', (32, 32, 3), datasets, config, args.warmup, args.rounds)
    results.append(row)
    print(format_row(row), flush=True)
  write_report(args.json, vars(args), results=results)
  return 0


if __name__ == '__main__':
  sys.exit(main())
