import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import runtime

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import tensorflow_federated as tff
    from tff_orchestra import runtime
    runtime.set_simulation_context()
    process = tff.aggregators.SecureSumFactory(2.0).create(tff.TensorType(np.float32))
    print(process.next(process.initialize(), [1.0, 3.0]).result)
    print('worker', runtime.running_workers()[0].pid, flush=True)
    if sys.argv[1] == 'hang':
        time.sleep(600)
    if sys.argv[1] == 'again':
        first = runtime.running_workers()[0]
        runtime.set_simulation_context()
        print(process.next(process.initialize(), [1.0, 1.0]).result)
        print('workers', len(runtime.running_workers()), 'first alive', first.is_alive())
""")


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as stat:
    return stat.read().split()[2] != 'Z'


def _wait_dead(pid, timeout=10.0):
  deadline = time.monotonic() + timeout
  while _alive(pid) and time.monotonic() < deadline:
    time.sleep(0.1)
  return not _alive(pid)


def test_secure_sum_runs_in_the_simulation_context():
  process = tff.aggregators.SecureSumFactory(2.0).create(tff.TensorType(np.float32))
  assert process.next(process.initialize(), [1.0, 3.0]).result == 3.0
  workers = runtime.running_workers()
  assert len(workers) == 1 and workers[0].is_alive()


def test_program_exit_stops_the_worker_and_releases_the_pipe():
  # capture_output: with an orphaned worker holding the pipe, run() would hang.
  done = subprocess.run(
      [sys.executable, '-c', SCRIPT, 'exit'], capture_output=True, text=True, timeout=120, check=True
  )
  lines = done.stdout.split('\n')
  assert float(lines[0]) == 3.0
  worker_pid = int(lines[1].split()[1])
  assert _wait_dead(worker_pid)


def test_sigkill_of_the_program_takes_the_worker_with_it():
  program = subprocess.Popen(
      [sys.executable, '-c', SCRIPT, 'hang'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
  )
  try:
    worker_pid = None
    for line in program.stdout:
      if line.startswith('worker'):
        worker_pid = int(line.split()[1])
        break
    assert worker_pid is not None and _alive(worker_pid)
    program.send_signal(signal.SIGKILL)
    program.wait(timeout=10)
    assert _wait_dead(worker_pid)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f'tff_orchestra_worker_{program.pid}_*'))
  finally:
    program.kill()
    program.wait()


def test_the_worker_log_is_readable_but_leaves_no_file():
  [worker] = runtime.running_workers()
  assert not os.path.exists(worker.log_path)
  assert isinstance(worker.log_tail(), str)


def test_a_worker_killed_between_calls_is_replaced_and_named(caplog):
  total = tff.federated_computation(lambda x: tff.federated_sum(x), tff.FederatedType(np.float32, tff.CLIENTS))
  assert total([1.0, 2.0]) == 3.0
  [worker] = runtime.running_workers()
  os.kill(worker.pid, signal.SIGKILL)
  assert _wait_dead(worker.pid)
  with caplog.at_level('WARNING', logger='tff_orchestra.runtime'):
    assert total([1.0, 2.0, 4.0]) == 7.0
  assert f'pid {worker.pid}, port {worker.port}) exited with code -9' in caplog.text
  [replacement] = runtime.running_workers()
  assert replacement.pid != worker.pid


def test_setting_the_context_again_replaces_the_worker():
  done = subprocess.run(
      [sys.executable, '-c', SCRIPT, 'again'], capture_output=True, text=True, timeout=120, check=True
  )
  assert done.stdout.split('\n')[2:4] == ['2.0', 'workers 1 first alive False']


def test_a_worker_that_dies_before_serving_is_retried(monkeypatch):
  real_binary = runtime.worker_binary_path()
  attempts = []

  def crash_first(real=real_binary):
    attempts.append(1)
    return '/bin/false' if len(attempts) == 1 else real

  monkeypatch.setattr(runtime.workers, 'worker_binary_path', crash_first)
  worker = runtime.workers._start_worker(-1)  # pylint: disable=protected-access
  try:
    assert len(attempts) == 2 and worker.is_alive()
  finally:
    runtime.workers._forget(worker)  # pylint: disable=protected-access


def test_a_worker_that_never_starts_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(runtime.workers, 'worker_binary_path', lambda: '/bin/false')
  with pytest.raises(RuntimeError, match='failed to start 3 times.*exited with code 1 before serving'):
    runtime.workers._start_worker(-1)  # pylint: disable=protected-access
