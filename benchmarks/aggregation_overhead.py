"""Per-round wall time of this library's factories against their TFF counterparts.

For each value size (float32 vector over `--clients` clients), each pair runs in
the same process and simulation context, rounds alternating between the two:
the median of `--rounds` rounds after `--warmup` rounds, and the ratio ours /
TFF's. The floor is numpy's weighted mean of the same arrays. Where the time
goes: the client-side work that TFF's counterparts do not do (our sketch for
cluster quality; the fixed-point encoding, which TFF's simulated
`SecureSumFactory` skips by summing floats), timed alone in plain TF. Prints a
table and writes JSON.

    python benchmarks/aggregation_overhead.py --sizes 10000 1000000 --clients 20

Pairs: ClusterQualityWeighting vs MeanFactory; GaussianNoise (integer grid,
exact discrete noise) vs DifferentiallyPrivateFactory.gaussian_fixed (float noise);
DistributedDiscreteGaussian vs TFF's own (private) DistributedDpSumFactory with
the discrete Gaussian (float-based sampler, no epsilon); SecureFixedPointSum vs
SecureSumFactory; the three chained vs tff.learning.robust_aggregator().

The profile of each row: the federated steps (intrinsic calls) of each side's
`next`, and what one step costs TFF's runtime at that size in the same run (a
client map of the value, a client map of a scalar); the TensorFlow work of each
stage timed alone in plain TF per round (sketch, clip and rounding, exact
noise, fixed-point encoding); the peak memory of this process and of the
worker during the pair.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from report import watch_memory, write_report

from tff_orchestra import aggregators as agg
from tff_orchestra import runtime
from tff_orchestra.aggregators import discrete_gaussian
from tff_orchestra.aggregators import integer_grid
from tff_orchestra.runtime import _tff_internal


def _pairs(clients: int):
  """(name, ours, TFF's, weighted) for each comparison."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    chained = agg.chain(
        agg.ClusterQualityWeighting(4),
        agg.GaussianNoise(0.1, clip=1.0, expected_clients_per_round=clients),
        agg.secure_integer_sum(),
    )
  return [
      ('cluster_quality vs MeanFactory', agg.ClusterQualityWeighting(4), tff.aggregators.MeanFactory(), True),
      (
          'gaussian_noise vs DP gaussian_fixed',
          agg.GaussianNoise(0.1, clip=1.0, expected_clients_per_round=clients, output='mean'),
          tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(0.1, clients, 1.0),
          False,
      ),
      (
          'distributed_discrete_gaussian vs TFF DistributedDpSumFactory',
          agg.DistributedDiscreteGaussian(0.1, clip=1.0, expected_clients_per_round=clients, bits=20),
          _tff_internal.distributed_dp_sum_factory(
              noise_multiplier=0.1, expected_clients_per_round=clients, bits=20, l2_clip=1.0,
              mechanism='distributed_dgauss', rotation_type='hd',
          ),
          False,
      ),
      ('secure_sum vs SecureSumFactory', agg.SecureFixedPointSum(1.0, bits=24, max_clients=clients),
       tff.aggregators.SecureSumFactory(1.0), False),
      ('chain vs robust_aggregator', chained, tff.learning.robust_aggregator(), True),
  ]


def _create(factory, weighted: bool, size: int):
  value_type = tff.TensorType(np.float32, [size])
  return factory.create(value_type, tff.TensorType(np.float32)) if weighted else factory.create(value_type)


def time_pair(processes, weighted: bool, values, weights, warmup: int, rounds: int) -> tuple[list[float], list[float]]:
  """Seconds of each timed `next` call of each, rounds alternating so drift hits both alike."""
  states = [process.initialize() for process in processes]
  args = (values, weights) if weighted else (values,)
  times = ([], [])
  for index in range(warmup + rounds):
    for which, process in enumerate(processes):
      started = time.perf_counter()
      states[which] = process.next(states[which], *args).state
      if index >= warmup:
        times[which].append(time.perf_counter() - started)
  return times


def federated_steps(process: tff.templates.AggregationProcess) -> dict[str, int]:
  """How many times `next` calls each intrinsic (federated_map, federated_sum, ...): the steps TFF's runtime runs."""
  counts = collections.Counter()

  def visit(message):
    if message.DESCRIPTOR.name == 'Intrinsic':
      counts[message.uri] += 1
    for field, value in message.ListFields():
      if field.type != field.TYPE_MESSAGE:
        continue
      for item in (value if field.label == field.LABEL_REPEATED else [value]):
        visit(item)

  visit(tff.framework.serialize_computation(process.next))
  return dict(sorted(counts.items()))


def stage_work_seconds(values, rounds: int) -> dict[str, float]:
  """Plain-TF seconds per round of each stage's TensorFlow work: per client (summed over clients) or on the server."""
  size = values[0].shape[0]
  noise = agg.GaussianNoise(0.1, clip=1.0, expected_clients_per_round=len(values)).calibrate(
      tff.TensorType(np.float32, [size]))
  distributed = agg.DistributedDiscreteGaussian(
      0.1, clip=1.0, expected_clients_per_round=len(values), bits=20).calibrate(tff.TensorType(np.float32, [size]))
  seed = tf.constant([1, 2], tf.int64)

  def clip_and_round(v):  # GaussianNoise's client step at clip 1, from the same integer_grid pieces
    flat, _ = integer_grid.l2_clip(integer_grid.flatten(v, size), 1.0)
    return integer_grid.conditional_round(flat * noise.clip_steps, noise.l2_bound_squared, seed)

  per_client = {
      'cluster_quality_sketch': tf.function(lambda v: agg.signed_fold_sketch(v, 256, 0)),
      'gaussian_noise_clip_and_round': tf.function(clip_and_round),
      'distributed_noise_per_client': tf.function(
          lambda v: discrete_gaussian.sample_discrete_gaussian(distributed.variance, distributed.padded_dimension, seed)),
      'secure_sum_encode_fixed_point': tf.function(lambda v: agg.encode_fixed_point(v, 1.0, 24)),
  }
  server = {
      'gaussian_noise_server_noise': tf.function(
          lambda: discrete_gaussian.sample_discrete_gaussian(noise.variance, size, seed)),
      'tff_float_noise_server': tf.function(lambda: tf.random.stateless_normal([size], [1, 2])),
  }
  tensors = [tf.constant(v) for v in values]
  seconds = {name: median_seconds(lambda: [piece(t).numpy() for t in tensors], rounds) for name, piece in per_client.items()}
  seconds.update({name: median_seconds(lambda: piece().numpy(), rounds) for name, piece in server.items()})
  return seconds


def runtime_step_seconds(values, rounds: int) -> dict[str, float]:
  """What one federated step costs TFF's runtime here: a client map of the value (in, out, summed) beyond the
  sum alone, and a client map of a scalar beyond none."""
  value_type = tff.TensorType(np.float32, [values[0].shape[0]])
  identity = tff.tensorflow.computation(lambda x: x, value_type)
  scalar = tff.tensorflow.computation(lambda x: tf.reduce_sum(x[:1]), value_type)
  placed = tff.FederatedType(value_type, tff.CLIENTS)
  variants = {
      'sum': tff.federated_computation(lambda v: tff.federated_sum(v), placed),
      'map_then_sum': tff.federated_computation(lambda v: tff.federated_sum(tff.federated_map(identity, v)), placed),
      'sum_and_scalar_map': tff.federated_computation(
          lambda v: (tff.federated_sum(v), tff.federated_sum(tff.federated_map(scalar, v))), placed),
  }
  medians = {name: median_seconds(lambda: computation(values), rounds) for name, computation in variants.items()}
  return dict(
      client_map_of_value=medians['map_then_sum'] - medians['sum'],
      client_map_of_scalar_with_sum=medians['sum_and_scalar_map'] - medians['sum'],
      sum_of_value=medians['sum'],
  )


def median_seconds(run, rounds: int) -> float:
  """Median seconds of `run()` over `rounds` calls, after one untimed call (tracing, first execution)."""
  run()
  times = []
  for _ in range(rounds):
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)
  return statistics.median(times)


def numpy_floor(values, weights, rounds: int) -> float:
  stacked = np.stack(values)
  return median_seconds(lambda: np.average(stacked, axis=0, weights=weights), rounds)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 1_000_000])
  parser.add_argument('--clients', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=9)
  parser.add_argument('--json', default='benchmarks/results/aggregation_overhead.json')
  args = parser.parse_args(argv)
  memory = watch_memory()

  rng = np.random.default_rng(0)
  results, profile = [], []
  for size in args.sizes:
    values = [rng.normal(scale=0.01, size=size).astype(np.float32) for _ in range(args.clients)]
    weights = [1.0] * args.clients
    floor = numpy_floor(values, weights, args.rounds)
    for name, ours, theirs, weighted in _pairs(args.clients):
      # A fresh worker per pair: what one pair leaves in the worker does not slow the next, and its peak is its own.
      with runtime.simulation_context():
        memory.reset()
        processes = [_create(factory, weighted, size) for factory in (ours, theirs)]
        ours_times, tff_times = time_pair(processes, weighted, values, weights, args.warmup, args.rounds)
        ours_seconds, tff_seconds = statistics.median(ours_times), statistics.median(tff_times)
        steps = [federated_steps(process) for process in processes]
        results.append(dict(
            size=size, pair=name, ours_seconds=ours_seconds, tff_seconds=tff_seconds,
            ratio=ours_seconds / tff_seconds, ours_times=ours_times, tff_times=tff_times, numpy_floor_seconds=floor,
            ours_federated_steps=steps[0], tff_federated_steps=steps[1], **memory.peaks(),
        ))
        print(f'{size:>9} {name:<38} ours {ours_seconds:8.3f} s  tff {tff_seconds:8.3f} s  '
              f'ratio {ours_seconds / tff_seconds:5.2f}  numpy floor {floor:.4f} s  '
              f'steps {sum(steps[0].values())} / {sum(steps[1].values())}', flush=True)
    stages = stage_work_seconds(values, args.rounds)
    with runtime.simulation_context():
      steps = runtime_step_seconds(values, args.rounds)
    profile.append(dict(size=size, clients=args.clients, stage_work_seconds=stages, runtime_step_seconds=steps))
    print(f'{size:>9} stage work per round, plain TF: '
          + ', '.join(f'{name} {seconds:.3f} s' for name, seconds in stages.items()), flush=True)
    print(f'{size:>9} TFF runtime per step: '
          + ', '.join(f'{name} {seconds:.4f} s' for name, seconds in steps.items()), flush=True)
  write_report(args.json, vars(args), results=results, profile=profile)
  return 0


if __name__ == '__main__':
  sys.exit(main())
