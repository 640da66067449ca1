"""The bad-input sweep: every case ends in one clear error naming what is wrong, never a traceback or silence.

Two tables, the command line and the Python API; each case is one test, so the
suite's count of passes under this module is the count of clear errors. A
command-line case must exit with code 2, print exactly one line (no
traceback), name what is wrong, and leave the output directory as it found it.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.training.test_loop import TINY
from tff_orchestra import aggregators as agg
from tff_orchestra import cli, orchestra, runtime, settings, training
from tff_orchestra.aggregators import registry


CLI_CASES = {
    'unknown dataset': (['--dataset', 'mnist'], "argument --dataset: must be one of digits, cifar10, cifar100, got 'mnist'"),
    'unknown aggregator': (['--aggregator', 'geometric_median'], "unknown aggregator 'geometric_median'"),
    'aggregator key missing': (['--aggregator', 'gaussian_noise:noise_multiplier=1.0'], "missing 1 required positional argument: 'clip'"),
    'aggregator key out of range': (['--aggregator', 'secure_sum:bits=70'], 'bits'),
    'aggregator key not a number': (['--aggregator', 'secure_sum:bits=many'], 'bits'),
    'unknown aggregator key': (['--aggregator', 'secure_sum:bitz=20'], 'bitz'),
    'secure sum max_clients below clients per round': (
        ['--aggregator', 'secure_sum:max_clients=1'], 'secure_sum: max_clients=1 is below --clients-per-round (2)'),
    'alpha zero': (['--alpha', '0'], 'argument --alpha: must be a number > 0, got 0.0'),
    'alpha negative': (['--alpha', '-1'], 'must be a number > 0'),
    'alpha nan': (['--alpha', 'nan'], 'argument --alpha: must be a number > 0, got nan'),
    'alpha inf': (['--alpha', 'inf'], 'argument --alpha: must be finite, got inf'),
    'alpha not a number': (['--alpha', 'x'], "argument --alpha: expected a number, got 'x'"),
    'temperature inf': (['--temperature', 'inf'], 'argument --temperature: must be finite, got inf'),
    'ema decay 1': (['--ema-decay', '1'], 'argument --ema-decay: must be a number >= 0 and < 1, got 1.0'),
    'rounds zero': (['--rounds', '0'], 'argument --rounds: must be an int >= 1, got 0'),
    'rounds not an int': (['--rounds', '2.5'], "argument --rounds: expected an integer, got '2.5'"),
    'negative seed': (['--seed', '-1'], 'argument --seed: must be an int >= 0, got -1'),
    'more clients per round than clients': (
        ['--clients-per-round', '5'],
        'argument --clients-per-round: cannot exceed --num-clients (3), got 5'),
    'local clusters above memory': (['--local-clusters', '32'], 'argument --num-local-clusters: cannot exceed --memory-size (16)'),
    'cifar without data dir': (['--dataset', 'cifar10'], 'argument --data-dir: must name the folder with the cifar10 archive'),
    'cifar data dir missing': (['--dataset', 'cifar10', '--data-dir', '/nonexistent'], '/nonexistent'),
    'unknown encoder': (['--encoder', 'vgg'], "argument --encoder: must be one of resnet18, small_cnn (or registered by a plugin), got 'vgg'"),
    'bad worker address': (['--workers', 'nohost'], "argument --workers: expected 'host:port' addresses (port 1-65535), got 'nohost'"),
    'worker listed twice': (['--workers', 'a:1,a:1'], 'argument --workers: each worker once'),
    'worker timeout zero': (['--worker-timeout', '0'], 'must be a number > 0'),
    'plugin missing': (['--plugin', 'no_such_plugin_module'], "plugin 'no_such_plugin_module' cannot be imported: ModuleNotFoundError"),
    'stage after a stage without inner factory': (['--aggregator', 'mean', '--aggregator', 'secure_sum'], 'MeanFactory) takes no inner factory'),
    'dp mean without expected clients': (
        ['--aggregator', 'gaussian_noise:noise_multiplier=1.0,clip=1.0,expected_clients_per_round=None'],
        "output='mean' (the default) divides the noisy sum by expected_clients_per_round"),
    'more labels per class than images': (
        ['--labels-per-class', '1000'], 'argument --labels-per-class: cannot exceed the training images of the smallest class'),
    'unknown flag': (['--clientz', '3'], 'unrecognized arguments: --clientz 3'),
    'config file missing': (['--config', '/nonexistent/run.toml'], '/nonexistent/run.toml: [Errno 2] No such file'),
}


@pytest.mark.parametrize('name', list(CLI_CASES))
def test_cli_bad_input_is_one_line_and_writes_nothing(name, tmp_path, capsys):
  arguments, message = CLI_CASES[name]
  output_dir = tmp_path / 'out'
  try:
    code = cli.main(['train', '--output-dir', str(output_dir), *TINY, *arguments])
  except SystemExit as exit_info:
    code = exit_info.code
  assert code == 2
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('tff-orchestra')]
  assert len(errors) == 1 and message in errors[0], errors
  assert not output_dir.exists()


@pytest.mark.parametrize('where', ['a file', 'under /proc', 'under /dev/null'])
def test_an_output_dir_that_cannot_hold_a_run_is_one_line(where, tmp_path, capsys):
  (tmp_path / 'file').write_text('x')
  output_dir = {'a file': tmp_path / 'file', 'under /proc': '/proc/tff_orchestra_run', 'under /dev/null': '/dev/null/run'}[where]
  assert cli.main(['train', '--output-dir', str(output_dir), *TINY, '--rounds', '1']) == 2
  [error] = capsys.readouterr().err.strip().splitlines()
  assert error.startswith(f'tff-orchestra: error: --output-dir {output_dir} cannot hold a run: '), error


def test_a_corrupt_saved_config_is_one_line(tmp_path, capsys):
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'checkpoints' / 'round_00000.npz').write_bytes(b'')
  (tmp_path / 'config.toml').write_text('[run\n')
  assert cli.main(['train', '--output-dir', str(tmp_path), *TINY, '--resume']) == 2
  [error] = capsys.readouterr().err.strip().splitlines()
  assert 'config.toml' in error and "Expected ']'" in error


def _secure_sum_of_three_clients_declared_two():
  process = agg.SecureFixedPointSum(1.0, max_clients=2).create(tff.TensorType(np.float32))
  process.next(process.initialize(), [0.1, 0.2, 0.3])


def _secure_sum_in_tffs_default_context():
  with tff.framework.get_context_stack().install(tff.backends.native.create_sync_local_cpp_execution_context()):
    agg.SecureFixedPointSum(1.0).create(tff.TensorType(np.float32))


PYTHON_CASES = {
    'secure sum bound 0': (lambda: agg.SecureFixedPointSum(0.0), ValueError, 'bound must be > 0.0'),
    'secure sum bound nan': (lambda: agg.SecureFixedPointSum(math.nan), ValueError, 'bound must be finite'),
    'secure sum bound text': (lambda: agg.SecureFixedPointSum('1'), TypeError, 'bound must be a number'),
    'secure sum bits 0': (lambda: agg.SecureFixedPointSum(1.0, bits=0), ValueError, 'bits must be >= 1'),
    'secure sum bits 62': (lambda: agg.SecureFixedPointSum(1.0, bits=62), ValueError, 'bits must be <= 61'),
    'secure sum overflow': (lambda: agg.SecureFixedPointSum(1.0, bits=60, max_clients=8), ValueError, 'could overflow'),
    'secure sum max clients 0': (lambda: agg.SecureFixedPointSum(1.0, max_clients=0), ValueError, 'max_clients must be >= 1'),
    'secure sum unknown shape': (
        lambda: agg.SecureFixedPointSum(1.0).create(tff.TensorType(np.float32, [None])), TypeError, 'fully defined shapes'),
    'secure sum int values': (lambda: agg.SecureFixedPointSum(1.0).create(tff.TensorType(np.int32)), TypeError, 'floating-point'),
    'secure sum more clients than max clients': (
        _secure_sum_of_three_clients_declared_two, tf.errors.InvalidArgumentError, 'more clients than max_clients=2'),
    'secure sum in TFF default context': (
        _secure_sum_in_tffs_default_context, runtime.ContextCannotRunSecureSumsError, 'cannot run secure sums'),
    'noise negative': (lambda: agg.GaussianNoise(-1.0, clip=1.0, output='sum'), ValueError, 'noise_multiplier'),
    'noise nan': (lambda: agg.GaussianNoise(math.nan, clip=1.0, output='sum'), ValueError, 'noise_multiplier must be finite'),
    'noise clip 0': (lambda: agg.GaussianNoise(1.0, clip=0.0, output='sum'), ValueError, 'clip'),
    'noise mean without expected clients': (lambda: agg.GaussianNoise(1.0, clip=1.0), ValueError, 'expected_clients_per_round'),
    'noise unknown shape': (
        lambda: agg.GaussianNoise(1.0, clip=1.0, output='sum').create(tff.TensorType(np.float32, [None])),
        TypeError, 'fully defined shapes'),
    'quality clusters 0': (lambda: agg.ClusterQualityWeighting(0), ValueError, 'num_clusters must be >= 1'),
    'quality floor 1': (lambda: agg.ClusterQualityWeighting(2, quality_floor=1.0), ValueError, 'quality_floor must be < 1.0'),
    'quality sketch 4': (lambda: agg.ClusterQualityWeighting(2, sketch_dim=4), ValueError, 'sketch_dim must be >= 8'),
    'quality temperature 0': (lambda: agg.ClusterQualityWeighting(2, temperature=0.0), ValueError, 'temperature must be > 0.0'),
    'quality seed negative': (lambda: agg.ClusterQualityWeighting(2, seed=-1), ValueError, 'seed must be >= 0'),
    'quality unknown shape': (
        lambda: agg.ClusterQualityWeighting(2).create(tff.TensorType(np.float32, [None]), tff.TensorType(np.float32)),
        TypeError, 'fully defined shapes'),
    'chain of a non-factory': (lambda: agg.chain('mean'), TypeError, 'chain'),
    'registry unknown name': (lambda: registry.build_stage('geometric_median'), ValueError, "unknown aggregator 'geometric_median'"),
    'registry bad spec': (lambda: registry.build_stage('secure_sum:bits'), ValueError, 'secure_sum'),
    'orchestra temperature inf': (lambda: orchestra.OrchestraConfig(temperature=math.inf), settings.InvalidSetting, 'temperature must be finite'),
    'orchestra memory below local clusters': (
        lambda: orchestra.OrchestraConfig(num_local_clusters=64, memory_size=32), settings.InvalidSetting, 'cannot exceed OrchestraConfig.memory_size'),
    'orchestra flip not a bool': (lambda: orchestra.OrchestraConfig(flip='no'), settings.InvalidSetting, 'flip must be true or false'),
    'train config no output dir': (lambda: training.TrainConfig.build(), settings.ConfigError, 'run.output_dir is required'),
    'train config unknown setting': (lambda: training.TrainConfig.build(output_dir='x', clients=3), TypeError, 'unknown setting clients'),
    'train config alpha inf': (lambda: training.TrainConfig.build(output_dir='x', alpha=math.inf), settings.InvalidSetting, 'data.alpha must be finite'),
    'train config section of another type': (
        lambda: training.TrainConfig(run=training.config.DataConfig()), TypeError, 'TrainConfig.run must be a RunConfig'),
    'client dataset of plain tensors': (
        lambda: orchestra.prepare_client_dataset(tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 1), np.float32))),
        TypeError, "expected a tf.data.Dataset of {'x': image, ...} elements"),
    'client batch size 0': (
        lambda: orchestra.prepare_client_dataset(tf.data.Dataset.from_tensor_slices({'x': np.zeros((4, 8, 8, 1))}), 0),
        ValueError, 'batch_size must be >= 1'),
    'unknown encoder': (lambda: orchestra.build_orchestra_process((8, 8, 1), encoder='vgg'), ValueError, 'vgg'),
}


@pytest.mark.parametrize('name', list(PYTHON_CASES))
def test_python_bad_input_raises_a_clear_error(name):
  call, error_type, message = PYTHON_CASES[name]
  with pytest.raises(error_type) as raised:
    call()
  assert message in str(raised.value) and '\n' not in str(raised.value).strip(), str(raised.value)
