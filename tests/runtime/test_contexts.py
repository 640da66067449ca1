"""Remote TFF workers: clients split across two loopback worker_binaries, and workers that stop answering."""

import pathlib
import subprocess
import sys
import warnings

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregators.test_fed_avg_integration import _client_data
from tests.aggregators.test_fed_avg_integration import _model_fn
from tests.orchestra.test_learner import CONFIG
from tests.orchestra.test_learner import SHAPE
from tests.orchestra.test_learner import _client_datasets
from tff_orchestra import aggregators as agg
from tff_orchestra import orchestra
from tff_orchestra import runtime


def _start_workers(count):
  workers = []
  try:
    for _ in range(count):
      workers.append(runtime.WorkerProcess())
  except BaseException:
    for worker in workers:
      worker.stop()
    raise
  return workers


@pytest.fixture(scope='module')
def two_workers():
  workers = _start_workers(2)
  try:
    yield [worker.address for worker in workers]
  finally:
    for worker in workers:
      worker.stop()


def _chain(max_clients):
  """The three factories chained, with zero noise: random only in the grid's randomized rounding (~1e-7)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    return agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=64),
        agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=max_clients),
        agg.secure_integer_sum(),
    )


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def _dependent_sums(values):
  """Sum of x * sum(x): its second aggregation needs the first's result."""
  total = tff.federated_sum(values)
  scale = tff.tensorflow.computation(lambda x, s: x * s)
  return tff.federated_sum(tff.federated_map(scale, (values, tff.federated_broadcast(total))))


def test_remote_context_options_are_checked():
  with pytest.raises(ValueError, match='max_concurrent_computation_calls'):
    runtime.set_simulation_context(workers='a:1', max_concurrent_computation_calls=2)
  with pytest.raises(ValueError, match='connect_timeout'):
    runtime.set_simulation_context(workers='a:1', connect_timeout=0)


def test_an_aggregation_process_split_across_two_workers_equals_a_local_run(two_workers):
  value_type = tff.TensorType(np.float32, [3])
  values = [np.array([i, -i, 0.5 * i], np.float32) for i in range(1, 6)]
  weights = [1.0, 2.0, 3.0, 4.0, 5.0]

  process = _chain(max_clients=5).create(value_type, tff.TensorType(np.float32))

  def rounds():
    state, results = process.initialize(), []
    for _ in range(3):
      output = process.next(state, values, weights)
      state = output.state
      results.append(output.result)
    return results, output.measurements

  local_results, local_measurements = rounds()
  with runtime.simulation_context(workers=two_workers):
    remote_results, remote_measurements = rounds()
  np.testing.assert_allclose(remote_results, local_results, rtol=1e-5, atol=1e-5)
  tf.nest.map_structure(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), local_measurements, remote_measurements
  )


def test_orchestra_rounds_split_across_two_workers_equal_a_local_run(two_workers):
  """Cluster-quality weighting alone: deterministic, unlike GaussianNoise's randomized rounding
  onto its grid, whose 1e-7 differences training can amplify over rounds."""
  data = _client_datasets(4)
  factory = agg.ClusterQualityWeighting(2, sketch_dim=64)

  process = orchestra.build_orchestra_process(SHAPE, config=CONFIG, model_update_aggregation_factory=factory)

  def rounds():
    state = process.initialize()
    for _ in range(3):
      output = process.next(state, data)
      state = output.state
    weights = process.get_model_weights(state)
    return weights.trainable + weights.non_trainable, orchestra.global_centroids(state), output.metrics

  local = rounds()
  with runtime.simulation_context(workers=two_workers):
    remote = rounds()
    again = rounds()
  assert remote[2]['client_work']['train']['examples'] == 128.0  # 4 clients x 2 full batches of 16
  tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), local, remote)
  tf.nest.map_structure(np.testing.assert_array_equal, remote, again)  # partial aggregates merge in worker order


def test_tff_federated_averaging_with_our_factory_splits_across_two_workers(two_workers):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    factory = agg.chain(agg.ClusterQualityWeighting(2), agg.GaussianNoise(0.0, 5.0, expected_clients_per_round=4))

  process = tff.learning.algorithms.build_weighted_fed_avg(
      _model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1), model_aggregator=factory
  )

  def rounds():
    state = process.initialize()
    for _ in range(2):
      output = process.next(state, _client_data())
      state = output.state
    return process.get_model_weights(state).trainable, output.metrics['client_work']['train']['loss']

  local = rounds()
  with runtime.simulation_context(workers=two_workers):
    remote = rounds()
  tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), local, remote)


def test_dependent_aggregations_run_on_one_worker_and_are_refused_by_two(two_workers):
  with runtime.simulation_context(workers=two_workers[:1]):
    assert _dependent_sums([1.0, 2.0, 3.0]) == 36.0
  with runtime.simulation_context(workers=two_workers):
    with pytest.raises(runtime.NotSplittableError, match='cannot be split across several TFF workers.*one worker'):
      _dependent_sums([1.0, 2.0, 3.0])


def test_an_unreachable_worker_is_named():
  address = f'localhost:{portpicker.pick_unused_port()}'
  with pytest.raises(runtime.WorkerUnavailableError, match=f'{address} did not answer within 0.5 s'):
    runtime.set_simulation_context(workers=[address], connect_timeout=0.5)


def test_a_remote_worker_that_dies_is_named_instead_of_retried_forever():
  workers = _start_workers(2)
  try:
    with runtime.simulation_context(workers=[w.address for w in workers], connect_timeout=1.0):
      total = tff.federated_computation(lambda x: tff.federated_sum(x), tff.FederatedType(np.float32, tff.CLIENTS))
      assert total([1.0, 2.0, 4.0]) == 7.0
      workers[1].stop()
      with pytest.raises(runtime.WorkerUnavailableError, match=f'{workers[1].address} did not answer'):
        total([1.0, 2.0, 4.0])
  finally:
    for worker in workers:
      worker.stop()


def _is_running_worker_binary(pid):
  try:
    state = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    return state != 'Z' and pathlib.Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')[0].endswith(b'worker_binary')
  except OSError:
    return False


WITHOUT_OUR_CONTEXT = '''
import numpy as np
import tensorflow_federated as tff
from tff_orchestra import aggregators as agg
from tff_orchestra import runtime

try:
  agg.SecureFixedPointSum(1.0).create(tff.TensorType(np.float32))
except runtime.ContextCannotRunSecureSumsError as error:
  print('REFUSED:', error)
test_context = tff.backends.test.create_sync_test_cpp_execution_context()  # a global: never collected
tff.framework.set_default_context(test_context)
process = agg.SecureFixedPointSum(1.0).create(tff.TensorType(np.float32))
print('TEST CONTEXT:', process.next(process.initialize(), [0.5, 0.25]).result)
from tff_orchestra.runtime import workers
print('TFF WORKERS:', *workers._tffs_worker_children())
'''


def test_tffs_default_context_is_refused_at_create_tffs_test_context_runs_and_its_worker_stops_at_exit():
  # The pipes close only when TFF's worker (which inherits them) has stopped too.
  done = subprocess.run([sys.executable, '-c', WITHOUT_OUR_CONTEXT], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  [refused] = [line for line in done.stdout.splitlines() if line.startswith('REFUSED:')]
  assert 'SecureFixedPointSum: the current TFF execution context cannot run secure sums' in refused
  assert 'runtime.set_simulation_context() before create()' in refused
  [ran] = [line for line in done.stdout.splitlines() if line.startswith('TEST CONTEXT:')]
  assert float(ran.split()[-1]) == pytest.approx(0.75, abs=1e-3)
  [started] = [line.split()[2:] for line in done.stdout.splitlines() if line.startswith('TFF WORKERS:')]
  assert len(started) == 1, 'TFF started its worker as a child of the script'
  assert not _is_running_worker_binary(int(started[0])), "TFF's worker outlived the script"
  assert 'Exception ignored' not in done.stderr and 'Traceback' not in done.stderr, done.stderr[-2000:]


def test_which_contexts_run_secure_sums_is_told_by_compiling_only():
  assert runtime.runs_secure_sums(tff.framework.get_context_stack().current) is True  # the session's, ours
  assert runtime.runs_secure_sums(tff.backends.native.create_sync_local_cpp_execution_context()) is False
  assert runtime.runs_secure_sums(tff.backends.test.create_sync_test_cpp_execution_context()) is True


def test_our_context_with_secure_intrinsics_off_is_refused_too():
  with runtime.simulation_context(secure_intrinsics=False):
    with pytest.raises(runtime.ContextCannotRunSecureSumsError, match='set_simulation_context'):
      agg.SecureFixedPointSum(1.0).create(tff.TensorType(np.float32))
