"""`TrainConfig`: one tree of settings, its flags, its run files, what a resume may change, what it names."""

import dataclasses
import pathlib
import re

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tff_orchestra import cli, settings, training
from tff_orchestra.training import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
UPDATE = tff.TensorType(np.float32, [1000])  # a model update, for the accounting of the integer mechanisms


def _config(**overrides):
  return training.TrainConfig.build(output_dir='unused', **overrides)


def _parse(*flags):
  return cli.build_parser().parse_args(['train', *flags])


def test_every_setting_is_one_flag_with_its_type_default_and_help():
  parser = cli.build_parser()
  help_text = parser._subparsers._group_actions[0].choices['train'].format_help()  # pylint: disable=protected-access
  for path, field in settings.leaves(training.TrainConfig).items():
    assert settings.flag_of(field) in help_text, path
    assert field.metadata['help'].split()[0] in help_text, path
  names = [path.split('.')[1] for path in settings.leaves(training.TrainConfig)]
  assert len(names) == len(set(names)), 'a setting is known by its field name alone'
  config = cli.train_config(_parse(
      '--output-dir', 'o', '--num-clients', '17', '--alpha', '2', '--temperature', '0.5', '--no-flip',
      '--aggregator', 'mean', '--workers', 'h:1,h:2', '--no-progress',
  ))
  assert (config.data.num_clients, config.data.alpha, config.orchestra.temperature) == (17, 2.0, 0.5)
  assert config.orchestra.flip is False and config.aggregation.aggregators == ('mean',)
  assert config.runtime.workers == ('h:1', 'h:2') and config.runtime.progress is False
  assert config.data.batch_size == config_lib.DataConfig.batch_size  # a flag not given keeps its default


def test_the_learner_takes_the_run_seed_and_clients_per_round():
  config = _config(seed=3, clients_per_round=4)
  assert (config.orchestra.seed, config.orchestra.max_clients_per_round) == (3, 4)
  train_help = cli.build_parser()._subparsers._group_actions[0].choices['train'].format_help()  # pylint: disable=protected-access
  assert '--num-local-clusters' in train_help and '--max-clients-per-round' not in train_help


def test_a_bad_value_names_its_setting_in_python():
  with pytest.raises(settings.InvalidSetting, match=r'data\.alpha must be a number > 0, got -1\.0'):
    _config(alpha=-1)
  with pytest.raises(settings.InvalidSetting, match=r'orchestra\.num_local_clusters cannot exceed OrchestraConfig\.memory_size'):
    _config(num_local_clusters=64, memory_size=32)
  with pytest.raises(settings.InvalidSetting, match=r'data\.alpha must be finite, got inf'):
    _config(alpha=float('inf'))
  with pytest.raises(settings.InvalidSetting, match=r'run\.seed must be an int, got 1\.5'):
    _config(seed=1.5)
  with pytest.raises(TypeError, match="unknown setting clients_count"):
    _config(clients_count=3)


def test_a_run_file_round_trips_and_flags_override_it(tmp_path):
  config = _config(num_clients=5, clients_per_round=3, aggregators=('mean',), flip=False, data_dir='/data')
  path = tmp_path / 'run.toml'
  path.write_text(config.to_toml())
  assert training.TrainConfig.from_toml(str(path)) == config
  overridden = cli.train_config(_parse('--config', str(path), '--alpha', '0.5', '--output-dir', 'other'))
  assert overridden == config.replace(alpha=0.5, output_dir='other')


@pytest.mark.parametrize(
    'text, message',
    [
        ('[data]\nalpha = 0\n', r'data\.alpha must be a number > 0, got 0\.0'),
        ('[data]\nalpha = 0.5\nclients = 3\n', r'unknown setting data\.clients; \[data\] has dataset, data_dir, num_clients'),
        ('[model]\nencoder = 3\n', r'model\.encoder must be a string, got 3'),
        ('[aggregation]\naggregators = "mean"\n', r'aggregation\.aggregators must be a list of strings'),
        ('[orchestra]\nseed = 3\n', r'unknown setting orchestra\.seed'),
        ('[trainer]\nx = 1\n', r'unknown section \[trainer\]'),
        ('[data\n', r"Expected ']'"),
    ],
)
def test_a_bad_run_file_is_one_error_line_naming_the_file_and_setting(text, message, tmp_path, capsys):
  path = tmp_path / 'run.toml'
  path.write_text('[run]\noutput_dir = "unused"\n' + text)
  assert cli.main(['train', '--config', str(path)]) == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith(f'tff-orchestra: error: {path}: ') and re.search(message, error), error


@pytest.mark.parametrize('page', ['README.md', 'docs/getting-started.md'])
def test_examples_digits_toml_is_the_run_the_pages_spell_out_as_flags(page):
  """`make run` trains examples/digits.toml; the README and the getting-started page also show it as flags."""
  text = (ROOT / page).read_text()
  [command] = re.findall(r'```bash\n(tff-orchestra train --output-dir outputs/digits-orchestra .*?)```', text, re.S)
  flags = command.replace('\\\n', ' ').split()[2:]
  from_flags = cli.train_config(_parse(*flags))
  from_file = training.TrainConfig.from_toml(str(ROOT / 'examples' / 'digits.toml'))
  assert from_file == from_flags
  assert 'tff-orchestra train --config examples/digits.toml' in (ROOT / 'Makefile').read_text()


def test_a_resume_may_change_the_output_dir_rounds_and_runtime_only():
  config = _config(rounds=3)
  assert config.differences(config.replace(rounds=30, output_dir='moved', workers=('h:1',), progress=False)) == []
  assert config.differences(config.replace(seed=2, alpha=0.5)) == [('run.seed', 0, 2), ('data.alpha', 0.1, 0.5)]


def test_the_runtime_section_is_not_saved():
  text = _config(workers=('h:1',)).to_toml()
  assert '\n[runtime]\n' not in text and 'h:1' not in text


def test_aggregator_specs_build_the_chain():
  factory = config_lib.build_aggregator(
      _config(rounds=1, num_clients=3, clients_per_round=2, aggregators=(
          'cluster_quality:num_clusters=3', 'gaussian_noise:noise_multiplier=0.5,clip=1.0', 'secure_integer_sum'
      ))
  )
  assert type(factory).__name__ == 'ClusterQualityWeighting' and factory.num_clusters == 3
  assert type(config_lib.build_aggregator(_config(rounds=1))) is tff.aggregators.MeanFactory


def test_cli_flags_build_the_model_aggregator_python_builds():
  """Parsed `--aggregator` flags and the same chain in Python: the same numbers, the mean."""
  args = _parse(
      '--output-dir', 'unused', '--clients', '3', '--clients-per-round', '3', '--seed', '7',
      '--aggregator', 'cluster_quality:num_clusters=2,sketch_dim=16',
      '--aggregator', 'gaussian_noise:noise_multiplier=0.0,clip=100.0',
      '--aggregator', 'secure_integer_sum',
  )
  from_cli = config_lib.build_aggregator(cli.train_config(args))
  with pytest.warns(UserWarning, match='sums the client weights without noise'):
    from_python = agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=16, seed=7),
        agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=3),
        agg.secure_integer_sum(),
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


def test_a_plugin_that_fails_to_import_is_a_config_error():
  with pytest.raises(training.ConfigError, match="plugin 'no_such_module' cannot be imported: ModuleNotFoundError"):
    config_lib.load_plugins(['no_such_module'])


def test_sections_are_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    _config().data.alpha = 3.0


def test_privacy_notes_name_a_guarantee_that_says_little():
  notes = config_lib.privacy_notes(_config(aggregators=('gaussian_noise:noise_multiplier=0.01,clip=1.0',)), UPDATE)
  assert len(notes) == 1 and 'epsilon after 21 rounds will be' in notes[0] and 'above 10' in notes[0]
  [clip_only] = config_lib.privacy_notes(_config(aggregators=('gaussian_noise:noise_multiplier=0.0,clip=1.0',)), UPDATE)
  assert 'no privacy guarantee (epsilon = inf)' in clip_only
  assert config_lib.privacy_notes(_config(aggregators=('gaussian_noise:noise_multiplier=50.0,clip=1.0',)), UPDATE) == []


def test_rounds_within_budget_is_what_the_dp_stage_would_release():
  # Default run: 10 of 10 clients (everyone, every round: add/remove), 20 rounds + round 0.
  assert config_lib.rounds_within_budget(_config(), UPDATE) == (None, None)
  spec = 'gaussian_noise:noise_multiplier=2.0,clip=1.0,max_epsilon=5.0'
  allowed, stage = config_lib.rounds_within_budget(_config(aggregators=(spec,)), UPDATE)
  noise = agg.GaussianNoise(2.0, 1.0, expected_clients_per_round=10, population=10, sampling='fixed_size')
  spent = [noise.epsilon_after(n, UPDATE) for n in (allowed, allowed + 1)]
  assert stage == spec and spent[0] <= 5.0 < spent[1] and allowed < 21
  with pytest.raises(settings.ConfigError, match=r'max_epsilon 0.1 is below the epsilon of one round \(2.17\): no round can run'):
    config_lib.rounds_within_budget(
        _config(aggregators=('gaussian_noise:noise_multiplier=2.0,clip=1.0,max_epsilon=0.1',)), UPDATE)


@pytest.mark.parametrize('name', ['gaussian_noise', 'distributed_discrete_gaussian'])
def test_the_discrete_stages_are_budgeted_for_the_model_update_they_see(name):
  spec = f'{name}:noise_multiplier=2.0,clip=1.0,max_epsilon=8.0'
  update_type = tff.TensorType(np.float32, [1000])
  allowed, stage = config_lib.rounds_within_budget(_config(aggregators=(spec,)), update_type)
  [(_, factory)] = config_lib.noise_stages(_config(aggregators=(spec,)))
  assert stage == spec and factory.epsilon_after(allowed, update_type) <= 8.0 < factory.epsilon_after(allowed + 1, update_type)
  assert config_lib.noise_description(_config(aggregators=(spec,))).startswith(f'{name} (')
