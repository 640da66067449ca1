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
"""

from __future__ import annotations

import argparse
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
from report import write_report

from tff_orchestra import aggregators as agg
from tff_orchestra import runtime
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


def time_pair(ours, theirs, weighted: bool, values, weights, warmup: int, rounds: int) -> tuple[float, float]:
  """Median seconds of one `next` call of each, rounds alternating so drift hits both alike."""
  processes = [_create(factory, weighted, values[0].shape[0]) for factory in (ours, theirs)]
  states = [process.initialize() for process in processes]
  args = (values, weights) if weighted else (values,)
  times = ([], [])
  for index in range(warmup + rounds):
    for which, process in enumerate(processes):
      started = time.perf_counter()
      states[which] = process.next(states[which], *args).state
      if index >= warmup:
        times[which].append(time.perf_counter() - started)
  return statistics.median(times[0]), statistics.median(times[1])


def client_side_seconds(values, rounds: int) -> dict[str, float]:
  """Plain-TF seconds per round (all clients) of the client-side work TFF's counterparts do not do."""
  pieces = {
      'signed_fold_sketch': tf.function(lambda v: agg.signed_fold_sketch(v, 256, 0)),
      'encode_fixed_point': tf.function(lambda v: agg.encode_fixed_point(v, 1.0, 24)),
  }
  seconds = {}
  for name, piece in pieces.items():
    tensors = [tf.constant(v) for v in values]
    piece(tensors[0]).numpy()
    times = []
    for _ in range(rounds):
      started = time.perf_counter()
      for tensor in tensors:
        piece(tensor).numpy()
      times.append(time.perf_counter() - started)
    seconds[name] = statistics.median(times)
  return seconds


def numpy_floor(values, weights, rounds: int) -> float:
  stacked = np.stack(values)
  times = []
  for _ in range(rounds):
    started = time.perf_counter()
    np.average(stacked, axis=0, weights=weights)
    times.append(time.perf_counter() - started)
  return statistics.median(times)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 1_000_000])
  parser.add_argument('--clients', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=9)
  parser.add_argument('--json', default='benchmarks/results/aggregation_overhead.json')
  args = parser.parse_args(argv)

  rng = np.random.default_rng(0)
  results, client_work = [], []
  with runtime.simulation_context():
    for size in args.sizes:
      values = [rng.normal(scale=0.01, size=size).astype(np.float32) for _ in range(args.clients)]
      weights = [1.0] * args.clients
      floor = numpy_floor(values, weights, args.rounds)
      for name, ours, theirs, weighted in _pairs(args.clients):
        ours_seconds, tff_seconds = time_pair(ours, theirs, weighted, values, weights, args.warmup, args.rounds)
        results.append(dict(
            size=size, pair=name, ours_seconds=ours_seconds, tff_seconds=tff_seconds,
            ratio=ours_seconds / tff_seconds, numpy_floor_seconds=floor,
        ))
        print(f'{size:>9} {name:<38} ours {ours_seconds:8.3f} s  tff {tff_seconds:8.3f} s  '
              f'ratio {ours_seconds / tff_seconds:5.2f}  numpy floor {floor:.4f} s', flush=True)
      client_side = client_side_seconds(values, args.rounds)
      client_work.append(dict(size=size, clients=args.clients, **client_side))
      print(f'{size:>9} client-side work per round, plain TF: '
            + ', '.join(f'{name} {seconds:.3f} s' for name, seconds in client_side.items()), flush=True)
  write_report(args.json, vars(args), results=results, client_side_work=client_work)
  return 0


if __name__ == '__main__':
  sys.exit(main())
