"""`TrainConfig`: the aggregator it names (from parsed flags too), its identity, its plugins."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tff_orchestra import cli, training
from tff_orchestra.training import config as config_lib


def _config(**overrides):
  return training.TrainConfig(output_dir='unused', **overrides)


def test_aggregator_specs_build_the_chain():
  factory = config_lib.build_aggregator(
      _config(rounds=1, num_clients=3, clients_per_round=2, aggregators=(
          'cluster_quality:num_clusters=3', 'gaussian_noise:noise_multiplier=0.5,clip=1.0', 'secure_sum:bits=20'
      ))
  )
  assert type(factory).__name__ == 'ClusterQualityWeighting' and factory.num_clusters == 3
  assert type(config_lib.build_aggregator(_config(rounds=1))) is tff.aggregators.MeanFactory


def test_cli_flags_build_the_model_aggregator_python_builds():
  """Parsed `--aggregator` flags and the same chain in Python: the same numbers, the mean."""
  args = cli.build_parser().parse_args([
      'train', '--output-dir', 'unused', '--clients', '3', '--clients-per-round', '3', '--seed', '7',
      '--aggregator', 'cluster_quality:num_clusters=2,sketch_dim=16',
      '--aggregator', 'gaussian_noise:noise_multiplier=0.0,clip=100.0',
      '--aggregator', 'secure_sum:bound=100.0,bits=30',
  ])
  from_cli = config_lib.build_aggregator(cli.train_config(args, 'unused'))
  with pytest.warns(UserWarning, match='sums the client weights without noise'):
    from_python = agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=16, seed=7),
        agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=3),
        agg.SecureFixedPointSum(100.0, bits=30, max_clients=3),
    )
  values = [np.array([1.0, 2.0], np.float32), np.array([2.0, 3.0], np.float32), np.array([6.0, 4.0], np.float32)]
  results = []
  for factory in (from_cli, from_python):
    process = factory.create(tff.TensorType(np.float32, [2]), tff.TensorType(np.float32))
    state = process.initialize()
    for _ in range(2):
      output = process.next(state, values, [1.0, 1.0, 1.0])
      state = output.state
      results.append(output.result)
  np.testing.assert_allclose(results[:2], results[2:], atol=1e-5)
  np.testing.assert_allclose(results[0], [3.0, 3.0], atol=1e-5)


def test_identity_is_everything_but_rounds_and_the_output_directory():
  identity = _config(rounds=3, aggregators=('mean',), plugins=('json',)).identity()
  assert 'rounds' not in identity and 'output_dir' not in identity
  assert identity['aggregators'] == ['mean'] and identity['plugins'] == ['json']
  assert _config(rounds=3).identity() == _config(rounds=30).identity()
  assert _config(seed=1).identity() != _config(seed=2).identity()


def test_a_plugin_that_fails_to_import_is_a_config_error():
  with pytest.raises(training.ConfigError, match="plugin 'no_such_module' cannot be imported: ModuleNotFoundError"):
    config_lib.load_plugins(['no_such_module'])
