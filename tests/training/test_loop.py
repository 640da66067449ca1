"""`tff-orchestra train` end to end: outputs, resume equality, faults, and one-line errors for bad input."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.data import fake_cifar
from tests.training.test_metrics import read_tensorboard_scalars
from tff_orchestra import cli, runtime, settings, training
from tff_orchestra.aggregators import registry
from tff_orchestra.orchestra import model as orchestra_model
from tff_orchestra.training import config as config_lib
from tff_orchestra.training import loop

TINY = [
    '--clients', '3', '--clients-per-round', '2', '--local-epochs', '1', '--projection-dim', '16',
    '--global-clusters', '8', '--local-clusters', '4', '--memory-size', '16',
    '--global-clustering-steps', '10', '--labels-per-class', '2', '--no-progress',
]


def _config(output_dir, rounds, **overrides):
  settings = dict(
      output_dir=str(output_dir), num_clients=3, clients_per_round=2, rounds=rounds, local_epochs=1,
      projection_dim=16, num_global_clusters=8, num_local_clusters=4, memory_size=16,
      global_clustering_steps=10, labels_per_class=2, progress=False,
  )
  settings.update(overrides)
  return training.TrainConfig.build(**settings)


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('straight')
  result = training.run(_config(output_dir, rounds=3))
  return output_dir, result


def _assert_same_rows(expected_rows, rows):
  """Every metric of every round equal, wall time aside."""
  assert [row['round'] for row in rows] == [row['round'] for row in expected_rows]
  for a, b in zip(expected_rows, rows):
    for key in a:
      if key != 'seconds':
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a['round'], key)


def _assert_same_checkpoint(dir_a, dir_b, name='round_00003.npz'):
  with np.load(dir_a / 'checkpoints' / name) as x, np.load(dir_b / 'checkpoints' / name) as y:
    assert x.files == y.files
    for array in x.files:
      np.testing.assert_allclose(x[array], y[array], rtol=1e-4, atol=1e-5)


def _start_cli_past_round_1(output_dir, *options):
  """`tff-orchestra train` (TINY, 3 rounds) in a subprocess, returned once round 1's checkpoint exists."""
  script = os.path.join(os.path.dirname(sys.executable), 'tff-orchestra')
  command = [script, 'train', '--output-dir', str(output_dir), *TINY, '--rounds', '3', *options]
  program = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not (output_dir / 'checkpoints' / 'round_00001.npz').exists():
    if program.poll() is not None or time.monotonic() > deadline:
      program.kill()
      raise AssertionError(f'no checkpoint of round 1: {program.communicate()[1][-2000:]}')
    time.sleep(0.05)
  return program, command


def test_a_run_writes_every_output(straight_run):
  output_dir, result = straight_run
  for name in ('config.toml', 'metrics.json', 'metrics.csv', 'partition.txt', 'privacy_report.json',
               'evaluation.json', 'evaluation.csv', 'losses.png', 'evaluation.png'):
    assert (output_dir / name).stat().st_size > 0, name
  assert sorted(os.listdir(output_dir / 'checkpoints')) == ['round_00002.npz', 'round_00003.npz']
  rows = json.loads((output_dir / 'metrics.json').read_text())
  assert [row['round'] for row in rows] == [0, 1, 2, 3]
  assert all(np.isfinite(row['client_work/train/cluster_loss']) for row in rows)
  assert {row['method'] for row in result['table']} == {'orchestra', 'random encoder', 'raw pixels'}
  header = (output_dir / 'metrics.csv').read_text().splitlines()[0]
  assert 'client_work/global_clustering/clusters_in_use' in header
  scalars = read_tensorboard_scalars(output_dir / 'tensorboard')
  assert sorted(scalars['client_work/train/cluster_loss']) == [0, 1, 2, 3]
  assert scalars['client_work/train/cluster_loss'][3] == pytest.approx(rows[3]['client_work/train/cluster_loss'])


def test_resume_gives_the_same_result_as_an_uninterrupted_run(straight_run, tmp_path):
  straight_dir, straight = straight_run
  training.run(_config(tmp_path, rounds=1))
  resumed = training.run(_config(tmp_path, rounds=3), resume=True)
  _assert_same_rows(straight['rows'], resumed['rows'])
  _assert_same_checkpoint(straight_dir, tmp_path)


def test_a_corrupt_checkpoint_is_named_and_the_previous_one_used(straight_run, tmp_path, capsys):
  straight_dir, straight = straight_run
  run_dir = tmp_path / 'run'
  shutil.copytree(straight_dir, run_dir)
  (run_dir / 'checkpoints' / 'round_00003.npz').write_bytes(b'not a zip file')
  resumed = training.run(_config(run_dir, rounds=3), resume=True)
  assert 'round_00003.npz is unreadable' in capsys.readouterr().err
  _assert_same_rows(straight['rows'], resumed['rows'])
  _assert_same_checkpoint(straight_dir, run_dir)


def test_no_readable_checkpoint_is_a_one_line_error(straight_run, tmp_path, capsys):
  straight_dir, _ = straight_run
  run_dir = tmp_path / 'run'
  shutil.copytree(straight_dir, run_dir)
  for name in ('round_00002.npz', 'round_00003.npz'):
    (run_dir / 'checkpoints' / name).write_bytes(b'')
  assert cli.main(['train', '--output-dir', str(run_dir), *TINY, '--rounds', '3', '--resume']) == 2
  error = capsys.readouterr().err
  assert 'no readable checkpoint' in error and 'round_00002.npz' in error and 'round_00003.npz' in error


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(straight_run, tmp_path):
  _, straight = straight_run
  program, command = _start_cli_past_round_1(tmp_path)
  program.send_signal(signal.SIGKILL)
  assert program.wait(timeout=30) == -signal.SIGKILL
  assert not (tmp_path / 'checkpoints' / 'round_00003.npz').exists(), 'the run ended before it was killed'
  done = subprocess.run([*command, '--resume'], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  _assert_same_rows(straight['rows'], json.loads((tmp_path / 'metrics.json').read_text()))


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_the_run_matches(straight_run, tmp_path):
  _, straight = straight_run
  program, _ = _start_cli_past_round_1(tmp_path)
  try:
    found = subprocess.run(['pgrep', '-P', str(program.pid), '-f', 'worker_binary'], capture_output=True, text=True)
    [worker_pid] = [int(pid) for pid in found.stdout.split()]
    os.kill(worker_pid, signal.SIGKILL)
    _, errors = program.communicate(timeout=600)
  finally:
    program.kill()
    program.wait()
  assert program.returncode == 0, errors[-2000:]
  assert f'(pid {worker_pid}, port' in errors and 'exited with code -9' in errors
  _assert_same_rows(straight['rows'], json.loads((tmp_path / 'metrics.json').read_text()))


@pytest.mark.slow
def test_a_remote_worker_killed_mid_run_is_named_and_resume_on_new_workers_matches(straight_run, tmp_path):
  _, straight = straight_run
  workers = [runtime.WorkerProcess() for _ in range(2)]
  try:
    program, command = _start_cli_past_round_1(
        tmp_path, '--workers', ','.join(w.address for w in workers), '--worker-timeout', '2'
    )
    workers[1].stop()
    _, errors = program.communicate(timeout=300)
    assert program.returncode == 1, errors[-2000:]
    assert f'TFF worker at {workers[1].address} did not answer within 2 s' in errors
    assert 'is the last one checkpointed: rerun this command with --resume' in errors
    for worker in workers:
      worker.stop()
    workers = [runtime.WorkerProcess() for _ in range(2)]
    resumed = [*command[:-4], '--workers', ','.join(w.address for w in workers), '--resume']
    done = subprocess.run(resumed, capture_output=True, text=True, timeout=600)
  finally:
    for worker in workers:
      worker.stop()
  assert done.returncode == 0, done.stderr[-2000:]
  _assert_same_rows(straight['rows'], json.loads((tmp_path / 'metrics.json').read_text()))


def test_resume_continues_after_the_last_checkpoint(tmp_path):
  """A crash after round 1's checkpoint loses nothing: metrics beyond it are dropped."""
  training.run(_config(tmp_path, rounds=2))
  os.remove(tmp_path / 'checkpoints' / 'round_00002.npz')
  start, rows = loop.prepare_output_dir(_config(tmp_path, rounds=2), resume=True)
  assert start == 2 and [row['round'] for row in rows] == [0, 1]


def test_a_privacy_budget_ends_training_after_the_last_round_it_allows(tmp_path, capsys):
  # 2 of 3 clients without replacement, z = 1: epsilon 16.4 after 2 rounds, above 20 after 3 (delta 1e-5).
  spec = 'gaussian_noise:noise_multiplier=1.0,clip=1.0,max_epsilon=20.0'
  result = training.run(_config(tmp_path, rounds=3, aggregators=(spec,)))
  assert [row['round'] for row in result['rows']] == [0, 1]
  assert result['rows'][-1]['aggregator/epsilon'] == pytest.approx(16.41, abs=0.01)
  assert not result['rows'][-1]['aggregator/budget_exhausted'] and result['table']
  printed = capsys.readouterr().out
  assert f'note: {spec}: the privacy budget allows rounds 0-1; training stops after round 1, not 3' in printed
  # Epsilon covers the model update; everything else that reaches the server is named, in the clear.
  report = json.loads((tmp_path / 'privacy_report.json').read_text())
  assert 'note: privacy: ' + report['summary'] in printed
  noised = [c for c in report['channels'] if c['covered_by_epsilon']]
  assert [(c['intrinsic'], c['noised_by']) for c in noised] == [('federated_sum', 'gaussian_noise (central, z = 1)')]
  in_the_clear = {c['intrinsic'] for c in report['channels'] if not c['covered_by_epsilon']}
  assert 'federated_aggregate' in in_the_clear  # Orchestra's local centroids
  assert any('clipped=float32' in c['value_type'] for c in report['channels'])  # the clipping statistics


def test_private_centroids_leave_nothing_outside_epsilon(tmp_path, capsys):
  update = 'gaussian_noise:noise_multiplier=1.0,clip=1.0,report_clipping=False'
  centroids = 'gaussian_noise:noise_multiplier=1.0,clip=1.0,output=sum,report_clipping=False'
  result = training.run(_config(
      tmp_path, rounds=1, aggregators=(update,), centroid_aggregator=centroids, client_weighting='uniform',
  ))
  last = result['rows'][-1]
  assert 'client_work/train/cluster_loss' not in last and np.isfinite(last['client_work/centroid_aggregation/epsilon'])
  report = json.loads((tmp_path / 'privacy_report.json').read_text())
  assert len(report['channels']) == 2 and all(c['covered_by_epsilon'] for c in report['channels'])
  assert report['joint_epsilon']['rounds'] == 2
  assert report['joint_epsilon']['epsilon'] > max(last['aggregator/epsilon'], last['client_work/centroid_aggregation/epsilon'])
  assert 'every aggregation is noised' in capsys.readouterr().out


def test_a_baseline_method_trains_under_dp_and_its_only_clear_channel_is_the_loss_sum(tmp_path, capsys):
  update = 'gaussian_noise:noise_multiplier=1.0,clip=1.0,report_clipping=False'
  result = training.run(_config(tmp_path, rounds=1, method='byol', aggregators=(update,), client_weighting='uniform'))
  assert np.isfinite(result['rows'][-1]['client_work/train/loss'])
  assert [row['method'] for row in result['table']] == ['byol', 'random encoder', 'raw pixels']
  assert result['table'][0]['centroid_nmi'] is None  # no global centroids outside Orchestra
  report = json.loads((tmp_path / 'privacy_report.json').read_text())
  in_the_clear = [c['intrinsic'] for c in report['channels'] if not c['covered_by_epsilon']]
  assert in_the_clear == ['federated_sum']  # the loss sums; no centroids
  with pytest.raises(config_lib.ConfigError, match='centroid_aggregator is for Orchestra alone'):
    _config(tmp_path / 'other', rounds=1, method='simclr', centroid_aggregator=update + ',output=sum').check_registered()


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_its_retry(tmp_path, monkeypatch, capsys):
  from tff_orchestra import methods  # pylint: disable=import-outside-toplevel

  def fail(*args, **kwargs):
    raise RuntimeError('the learner could not be built')

  with monkeypatch.context() as patch:
    patch.setattr(methods, 'build_learning_process', fail)
    assert cli.main(['train', '--output-dir', str(tmp_path), *TINY, '--rounds', '1']) == 1
  assert 'error: RuntimeError: the learner could not be built' in capsys.readouterr().err
  assert (tmp_path / 'config.toml').exists() and not (tmp_path / 'checkpoints').exists()
  # The corrected command (here: another seed), without --resume, is accepted and starts afresh.
  assert loop.prepare_output_dir(_config(tmp_path, rounds=1, seed=3), resume=False) == (0, [])
  assert settings.load_toml(tmp_path / 'config.toml')['run']['seed'] == 3


@pytest.mark.slow
def test_ctrl_c_stops_after_the_round_with_a_checkpoint(tmp_path):
  """Resuming from that checkpoint is what the SIGKILL test checks; here: the stop itself."""
  program, _ = _start_cli_past_round_1(tmp_path)
  program.send_signal(signal.SIGINT)
  _, errors = program.communicate(timeout=300)
  assert program.returncode == 130, errors[-2000:]
  lines = [line for line in errors.splitlines() if line.startswith('tff-orchestra')]
  assert len(lines) == 1 and 'Traceback' not in errors, errors[-2000:]
  [last] = re.findall(r'tff-orchestra: interrupted; round (\d) is the last one checkpointed: rerun this command '
                      r'with --resume to continue', lines[0])
  assert (tmp_path / 'checkpoints' / f'round_0000{last}.npz').exists() and int(last) < 3
  assert len(json.loads((tmp_path / 'metrics.json').read_text())) == int(last) + 1


def test_existing_output_is_left_alone(straight_run, tmp_path, capsys):
  straight_dir, _ = straight_run
  before = {p: p.stat().st_mtime_ns for p in straight_dir.rglob('*')}
  assert cli.main(['train', '--output-dir', str(straight_dir), *TINY, '--rounds', '3']) == 2
  assert 'pass --resume' in capsys.readouterr().err
  assert cli.main(['train', '--output-dir', str(straight_dir), *TINY, '--rounds', '3', '--seed', '5', '--resume']) == 2
  assert 'different configuration (--seed: saved 0, given 5)' in capsys.readouterr().err  # named by the flag given
  assert {p: p.stat().st_mtime_ns for p in straight_dir.rglob('*')} == before


USER_PLUGIN = '''
"""A third party's aggregator and encoder, registered without editing tff_orchestra."""
import tensorflow as tf
from tests.aggregators.testing import ClipEachCoordinate
from tff_orchestra import aggregators as agg, orchestra


def tiny_encoder(input_shape):
  inputs = tf.keras.Input(input_shape)
  x = tf.keras.layers.Conv2D(8, 3, padding='same', activation='relu')(inputs)
  return tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(x))


agg.register_aggregator('clip_each', ClipEachCoordinate)
orchestra.register_encoder('tiny_encoder', tiny_encoder)
'''


def test_a_third_party_plugin_is_usable_from_the_cli(tmp_path, monkeypatch, capsys):
  (tmp_path / 'third_party_plugin.py').write_text(USER_PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(registry, '_REGISTRY', dict(registry._REGISTRY))  # pylint: disable=protected-access
  output_dir = tmp_path / 'run'
  arguments = [
      'train', '--output-dir', str(output_dir), *TINY, '--rounds', '1', '--plugin', 'third_party_plugin',
      '--encoder', 'tiny_encoder', '--aggregator', 'clip_each:limit=10.0',
      '--aggregator', 'secure_sum:bits=30,bound=100.0',
  ]
  try:
    assert cli.main(arguments) == 0
    capsys.readouterr()
    assert cli.main(['aggregators', '--plugin', 'third_party_plugin']) == 0
  finally:
    orchestra_model.ENCODERS.pop('tiny_encoder', None)
    sys.modules.pop('third_party_plugin', None)
  rows = json.loads((output_dir / 'metrics.json').read_text())
  assert 'aggregator/mean_value/secure_bound' in rows[-1]  # clip_each -> secure sum, averaged by the chain
  saved = settings.load_toml(output_dir / 'config.toml')
  assert saved['run']['plugins'] == ['third_party_plugin'] and saved['model']['encoder'] == 'tiny_encoder'
  listing = capsys.readouterr().out
  assert 'clip_each: A user\'s stage: clips every coordinate' in listing and 'keys: limit' in listing
  assert 'max_clients=(--clients-per-round)' in listing and 'example: --aggregator secure_sum:' in listing


def test_cifar10_from_a_local_archive(tmp_path):
  files = {name: fake_cifar.batch(10, 40, seed) for seed, name in enumerate(fake_cifar.CIFAR10['train'])}
  files[fake_cifar.CIFAR10['test']] = fake_cifar.batch(10, 60, seed=99)
  fake_cifar.write_archive(tmp_path / 'data', 10, files)
  config = _config(tmp_path / 'run', rounds=1, dataset='cifar10', data_dir=str(tmp_path / 'data'), client_weighting='uniform')
  result = training.run(config)
  assert len(result['table']) == 3
  rows = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
  assert rows[-1]['client_work/train/examples'] > 0
