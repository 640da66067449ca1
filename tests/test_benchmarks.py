"""Each benchmark script runs on its smallest setting, so none can rot."""

import json
import math
import subprocess
import sys

import pytest

TINY_ORCHESTRA = [
    '--projection-dim', '16', '--global-clusters', '8', '--local-clusters', '4', '--memory-size', '16',
    '--global-clustering-steps', '5',
]


def _run(script: str, *arguments: str, json_path) -> tuple[dict, str]:
  """Runs `benchmarks/<script>` with `arguments`; returns its JSON report and stdout."""
  done = subprocess.run(
      [sys.executable, f'benchmarks/{script}', *arguments, '--json', str(json_path)],
      capture_output=True, text=True, timeout=600,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return json.loads(json_path.read_text()), done.stdout


@pytest.mark.slow
def test_orchestra_quality_smoke(tmp_path):
  report, stdout = _run(
      'orchestra_quality.py', '--seeds', '0', '--rounds', '1', '--clients', '3', '--clients-per-round', '2',
      '--local-epochs', '1', *TINY_ORCHESTRA, '--labels-per-class', '2', json_path=tmp_path / 'quality.json',
  )
  assert set(report['summary']) == {'orchestra', 'random encoder', 'raw pixels'}
  assert set(report['beats_both_baselines']) == {'few_label_probe', 'nmi'}
  assert 'orchestra beats both baselines on nmi' in stdout


@pytest.mark.slow
def test_aggregation_overhead_smoke(tmp_path):
  report, _ = _run(
      'aggregation_overhead.py', '--sizes', '100', '--clients', '3', '--warmup', '1', '--rounds', '1',
      json_path=tmp_path / 'overhead.json',
  )
  assert len(report['results']) == 5 and all(r['ratio'] > 0 for r in report['results'])
  cluster_quality = report['results'][0]
  assert cluster_quality['ours_federated_steps']['federated_max'] == 1
  assert cluster_quality['tff_federated_steps']['federated_sum'] == 2  # MeanFactory: the weighted values, the weights
  assert all(r['python_peak_rss_mib'] > 100 and r['worker_peak_rss_mib'] > 50 for r in report['results'])
  [profile] = report['profile']
  assert all(seconds > 0 for seconds in profile['stage_work_seconds'].values())
  assert set(profile['runtime_step_seconds']) == {'client_map_of_value', 'client_map_of_scalar_with_sum', 'sum_of_value'}
  assert report['peak_memory']['worker_peak_rss_mib'] > 50


@pytest.mark.slow
def test_privacy_utility_smoke(tmp_path):
  report, stdout = _run(
      'privacy_utility.py', '--rounds', '1', '--clients', '4', '--clients-per-round', '2', '--local-epochs', '1',
      *TINY_ORCHESTRA, '--labels-per-class', '2', '--noise-multipliers', '1.0', '--clip', '1.0',
      json_path=tmp_path / 'privacy.json',
  )
  assert report['sampling'] == '2 of 4 clients drawn without replacement, replace one client (sensitivity 2 x clip)'
  assert report['delta'] == 1e-5
  assert set(report['baselines']) == {'random encoder', 'raw pixels'}
  no_dp, dp = report['results']
  assert no_dp['noise_multiplier'] is None and no_dp['epsilon'] is None and 'no DP' in no_dp['epsilon_note']
  assert dp['noise_multiplier'] == 1.0 and dp['clip'] == 1.0
  assert dp['rounds_accounted'] == 2  # round 0 and one training round
  assert 0 < dp['epsilon'] < float('inf')
  assert dp['epsilon_real_valued_gaussian'] <= dp['epsilon'] <= 1.2 * dp['epsilon_real_valued_gaussian']
  assert dp['epsilon_against_server'] > dp['epsilon']
  for row in (no_dp, dp):
    assert row['error'] is None and 0 <= row['few_label_probe'] <= 1 and row['seconds'] > 0
  assert 'inf (no DP)' in stdout


@pytest.mark.slow
def test_round_cost_smoke(tmp_path):
  report, _ = _run(
      'round_cost.py', '--models', 'small_cnn', '--digits-clients', '2', '--digits-local-epochs', '1',
      '--rounds', '1', '--warmup', '0', *TINY_ORCHESTRA, json_path=tmp_path / 'round_cost.json',
  )
  [row] = report['results']
  assert row['clients'] == 2 and row['local_steps_per_round'] > 0
  assert row['ratio'] == pytest.approx(row['tff_round_seconds'] / row['floor_seconds'])
  for key in ('floor_seconds', 'tff_concurrent_round_seconds', 'server_clustering_seconds', 'weight_movement_seconds',
              'xla_floor_seconds'):
    assert row[key] > 0, key
  assert row['xla_speedup'] == pytest.approx(row['floor_seconds'] / row['xla_floor_seconds'])
  assert row['python_peak_rss_mib'] > 100 and row['worker_peak_rss_mib'] > 50


@pytest.mark.slow
def test_memory_ceiling_smoke(tmp_path):
  report, stdout = _run(
      'memory_ceiling.py', '--encoder', 'small_cnn', '--sequential-clients', '1', '2', '--concurrent-clients',
      '--examples', '16', *TINY_ORCHESTRA, json_path=tmp_path / 'memory.json',
  )
  assert [row['clients'] for row in report['sequential']['rows']] == [1, 2]
  assert all(row['worker_peak_rss_mib'] > 50 and row['round_seconds'] > 0 for row in report['sequential']['rows'])
  assert report['sequential']['worker_peak_fit']['slope'] == pytest.approx(
      report['sequential']['rows'][1]['worker_peak_rss_mib'] - report['sequential']['rows'][0]['worker_peak_rss_mib'])
  assert report['concurrent'] == {'rows': [], 'worker_peak_fit': None} and 'sequential: worker peak' in stdout


@pytest.mark.slow
def test_scaling_smoke(tmp_path):
  report, _ = _run(
      'scaling.py', '--clients', '1', '2', '--widths', '4', '8', '--size-clients', '1', '--examples', '8',
      '--local-epochs', '1', '--rounds', '1', *TINY_ORCHESTRA, json_path=tmp_path / 'scaling.json',
  )
  assert [row['clients'] for row in report['clients_sweep']['rows']] == [1, 2]
  parameters = [row['parameters'] for row in report['model_size_sweep']['rows']]
  assert parameters[0] < parameters[1]
  for sweep in ('clients_sweep', 'model_size_sweep'):
    assert len(report[sweep]['fit']['relative_deviation']) == 2
    assert all(row['worker_peak_rss_mib'] > 0 for row in report[sweep]['rows'])


@pytest.mark.slow
def test_remote_workers_smoke(tmp_path):
  report, stdout = _run(
      'remote_workers.py', '--clients', '4', '--local-epochs', '1', '--rounds', '1', '--warmup', '0',
      '--settings', 'local', '2 remote', *TINY_ORCHESTRA, json_path=tmp_path / 'remote.json',
  )
  assert [row['setting'] for row in report['results']] == ['local', '2 remote']
  assert [len(row['worker_cpu_seconds_per_round']) for row in report['results']] == [1, 2]
  for row in report['results']:
    assert row['round_seconds'] > 0 and all(cpu > 0 for cpu in row['worker_cpu_seconds_per_round'])
  assert stdout.count('worker CPU') == 2


@pytest.mark.slow
def test_checkpoint_formats_smoke(tmp_path):
  report, stdout = _run('checkpoint_formats.py', '--repeats', '1', json_path=tmp_path / 'checkpoints.json')
  assert report['exact'] == {'npz': True, 'manager': True}
  assert set(report['median_seconds']) == {'npz save', 'npz load', 'manager save', 'manager load'}
  assert report['manager_existing_version'].startswith('ProgramStateExistsError')
  assert 'manager over npz' in stdout


def _privacy_audit_module():
  sys.path.insert(0, 'benchmarks')
  try:
    import privacy_audit  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove('benchmarks')
  return privacy_audit


def test_privacy_audit_bound_is_the_one_run_test():
  audit = _privacy_audit_module()
  # Pure epsilon-DP: the p-value is the binomial tail at q = e^eps / (1 + e^eps).
  assert audit.p_value(1000, 100, 60, 0.0, 0.0) == pytest.approx(0.0284, abs=1e-3)
  assert audit.p_value(1000, 100, 100, 1.0, 0.0) == pytest.approx((1 / (1 + math.exp(-1.0))) ** 100, rel=1e-9)
  # Half the guesses right rules nothing out; more right, more ruled out; delta weakens the bound.
  assert audit.epsilon_lower_bound(1000, 200, 100, 1e-5) == 0.0
  bounds = [audit.epsilon_lower_bound(1000, 200, v, 1e-5) for v in (130, 160, 190)]
  assert 0.0 < bounds[0] < bounds[1] < bounds[2]
  assert audit.epsilon_lower_bound(10**6, 200, 190, 1e-5) < bounds[2]
  # At the bound, the mechanism is ruled out at 95% confidence, and just above it is not.
  assert audit.p_value(1000, 200, 160, bounds[1], 1e-5) < 0.05 <= audit.p_value(1000, 200, 160, bounds[1] + 1e-3, 1e-5)


@pytest.mark.slow
def test_privacy_audit_smoke(tmp_path):
  report, stdout = _run(
      'privacy_audit.py', '--rounds', '2', '--slots', '50', '--guesses', '20', '--mechanisms', 'central',
      'broken: noise off', json_path=tmp_path / 'audit.json',
  )
  rows = {row['mechanism']: row for row in report['results']}
  assert set(rows) == {'central', 'broken: noise off'}
  assert all(row['canaries'] == 100 and row['guesses'] == 40 for row in rows.values())
  assert rows['central']['reported_epsilon'] == pytest.approx(2.167, abs=2e-3)  # one round, z = 2
  assert rows['broken: noise off']['correct'] == 40 and rows['broken: noise off']['noise_multiplier_run'] == 0.0
  assert 'caught' in stdout


@pytest.mark.slow
def test_robustness_smoke(tmp_path):
  report, stdout = _run(
      'robustness.py', '--aggregators', 'mean', 'cqw_robust', 'multi_krum', '--attacks', 'sign_flip', '--fractions',
      '0', '0.4', '--alphas', '1.0', '--seeds', '0', '--clients', '5', '--rounds', '3', json_path=tmp_path / 'robust.json',
  )
  assert len(report['results']) == 6  # 3 aggregators x (clean, sign flip 40%)
  cells = {(c['aggregator'], c['attack']): c for c in report['summary']}
  assert all(0 <= c['accuracy_mean'] <= 100 and c['aggregation_seconds_per_round'] > 0 for c in cells.values())
  assert cells[('mean', 'sign_flip')]['accuracy_mean'] < cells[('mean', 'none')]['accuracy_mean']
  assert (tmp_path / 'robust.png').stat().st_size > 0
  assert '| alpha | attack | malicious | mean | cqw_robust | multi_krum |' in stdout


@pytest.mark.slow
def test_robustness_orchestra_smoke(tmp_path):
  report, stdout = _run(
      'robustness.py', '--task', 'orchestra', '--aggregators', 'mean', '--attacks', 'ipm', '--fractions', '0.4',
      '--clients', '3', '--orchestra-rounds', '0', json_path=tmp_path / 'robust_orchestra.json',
  )
  [result] = report['results']
  assert result['attack'] == 'ipm' and 0 <= result['accuracy'] <= 100 and -1 <= result['nmi'] <= 1
  assert report['summary'][0]['nmi_mean'] == result['nmi']
  assert stdout.count('| alpha | attack |') == 3  # few-label probe, which-to-pick and NMI tables


@pytest.mark.slow
def test_methods_smoke(tmp_path):
  report, stdout = _run(
      'methods.py', '--methods', 'orchestra', 'rotation', '--alphas', '0.5', '--seeds', '0', '--rounds', '1',
      '--clients', '3', '--clients-per-round', '2', '--local-epochs', '1', *TINY_ORCHESTRA, '--labels-per-class', '2',
      json_path=tmp_path / 'methods.json',
  )
  assert set(report['runs']) == {'orchestra|alpha=0.5|seed=0', 'rotation|alpha=0.5|seed=0'}
  by_method = report['summary']['0.5']
  assert all(by_method[m]['seconds_per_round']['mean'] > 0 and 'uniformity' in by_method[m] for m in by_method)
  assert sorted(report['ranks']['0.5']['nmi'].values()) == [1, 2]
  assert (tmp_path / 'methods.png').stat().st_size > 0 and 'rotation' in stdout
  _, again = _run('methods.py', '--methods', 'orchestra', 'rotation', '--alphas', '0.5', '--seeds', '0', '--rounds', '1',
                  '--clients', '3', '--clients-per-round', '2', '--local-epochs', '1', *TINY_ORCHESTRA,
                  '--labels-per-class', '2', json_path=tmp_path / 'methods.json')
  assert 'resuming: 2 runs already in' in again


@pytest.mark.slow
def test_methods_runs_cifar10_from_local_files(tmp_path):
  from tests.data import fake_cifar  # pylint: disable=import-outside-toplevel

  files = {name: fake_cifar.batch(10, 40, seed) for seed, name in enumerate(fake_cifar.CIFAR10['train'])}
  files[fake_cifar.CIFAR10['test']] = fake_cifar.batch(10, 60, seed=99)
  fake_cifar.write_archive(tmp_path / 'data', 10, files)
  report, _ = _run(
      'methods.py', '--dataset', 'cifar10', '--data-dir', str(tmp_path / 'data'), '--methods', 'rotation',
      '--alphas', '0.1', '--seeds', '0', '--rounds', '1', '--clients', '3', '--clients-per-round', '2',
      '--local-epochs', '1', *TINY_ORCHESTRA, '--labels-per-class', '2', json_path=tmp_path / 'cifar.json',
  )
  assert report['train']['data']['dataset'] == 'cifar10' and list(report['runs']) == ['rotation|alpha=0.1|seed=0']
