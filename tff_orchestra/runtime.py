"""Execution contexts for simulation, with worker processes that do not outlive us.

TFF 0.87 runs computations in a C++ `worker_binary` that it starts as a
subprocess. Left to itself, that process outlives the Python program that
started it and keeps the program's stdout/stderr open, so `python x.py | tee`
hangs. This module starts the worker itself so that it

* dies with its parent, even on SIGKILL (Linux `PR_SET_PDEATHSIG`, set by a
  tiny launcher that then exec()s the worker),
* is stopped at interpreter exit (`atexit`) and by `shutdown()`,
* writes its log to an unlinked temporary file (`WorkerProcess.log_tail()`
  reads it) instead of the caller's terminal, so nothing is left behind.

Use `set_simulation_context()` once at program start, or
`with simulation_context(): ...` for a scoped context (tests, notebooks).
`secure_intrinsics=True` (the default) compiles `tff.federated_secure_sum*`
into plain sums, as TFF's test context does: the only way to run secure
aggregation in a single-process simulation. The static check
`tff.test.assert_not_contains_unsecure_aggregation` still sees the secure
intrinsics, because it inspects the computation before this compilation.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Optional

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import compiler as native_compiler
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import placements

__all__ = [
    'WorkerProcess',
    'WorkerStartError',
    'running_workers',
    'set_simulation_context',
    'shutdown',
    'simulation_context',
    'worker_binary_path',
]

_GRPC_OPTIONS = [
    ('grpc.max_message_length', -1),
    ('grpc.max_receive_message_length', -1),
    ('grpc.max_send_message_length', -1),
]
_READY_TIMEOUT_SEC = 60.0
_START_ATTEMPTS = 3

_logger = logging.getLogger(__name__)
_lock = threading.Lock()
_workers: list['WorkerProcess'] = []
_default_service: Optional['_LocalWorkerService'] = None


def worker_binary_path() -> str:
  """Path of the C++ worker shipped inside the `tensorflow-federated` wheel."""
  package_dir = os.path.dirname(tff.__file__)
  path = os.path.join(package_dir, 'data', 'worker_binary')
  if not os.path.isfile(path):
    raise RuntimeError(
        f'TensorFlow Federated worker binary not found at {path}; is '
        'tensorflow-federated==0.87.0 installed (see README: make install)?'
    )
  return path


# Started instead of the worker, exec()s into it: Linux then sends the worker
# SIGTERM when our thread that started it dies (PR_SET_PDEATHSIG survives
# exec). A fresh interpreter does it, not `preexec_fn`, which runs Python in a
# forked copy of this multi-threaded process and crashed there now and then.
_LAUNCHER = """
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
if os.getppid() != int(sys.argv[1]):
  sys.exit('tff_orchestra: parent gone before the worker started')
os.execv(sys.argv[2], sys.argv[2:])
"""


class WorkerStartError(RuntimeError):
  """A worker_binary died or hung before it served."""


class WorkerProcess:
  """One local `worker_binary` serving TFF's executor over gRPC on loopback."""

  def __init__(self, max_concurrent_computation_calls: int = -1):
    self.port = portpicker.pick_unused_port()
    self.log_path = os.path.join(
        tempfile.gettempdir(), f'tff_orchestra_worker_{os.getpid()}_{self.port}.log'
    )
    self._log = open(self.log_path, 'a+b')  # Appending: reading it back never moves the worker's writes.
    self._process = subprocess.Popen(
        [
            sys.executable, '-I', '-S', '-c', _LAUNCHER, str(os.getpid()),
            worker_binary_path(),
            f'--port={self.port}',
            f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
        ],
        stdin=subprocess.DEVNULL,
        stdout=self._log,
        stderr=subprocess.STDOUT,
    )
    channel = grpc.insecure_channel(f'localhost:{self.port}', _GRPC_OPTIONS)
    self.stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
    deadline = time.monotonic() + _READY_TIMEOUT_SEC
    while not self.stub.is_ready:
      if self._process.poll() is not None:
        self._fail(f'exited with code {self._process.returncode} before serving')
      if time.monotonic() > deadline:
        self._fail(f'was not ready after {_READY_TIMEOUT_SEC:.0f}s')
      time.sleep(0.05)
    # The open handle keeps the log readable; no file is left behind, even if
    # this program is killed.
    os.remove(self.log_path)

  def log_tail(self, size: int = 2000) -> str:
    """The last `size` bytes the worker wrote to its stdout and stderr."""
    self._log.seek(0, os.SEEK_END)
    self._log.seek(max(0, self._log.tell() - size))
    return self._log.read().decode(errors='replace').strip()

  def _fail(self, what: str) -> None:
    """Stops the worker and raises with the end of its log (the log is removed)."""
    tail = self.log_tail()
    self.stop()
    raise WorkerStartError(f'TFF worker_binary on port {self.port} {what}; its log ends: {tail or "(empty)"}')

  @property
  def pid(self) -> int:
    return self._process.pid

  def is_alive(self) -> bool:
    return self._process.poll() is None

  @property
  def returncode(self) -> Optional[int]:
    """The exit code (negative: killed by that signal), or None while it runs."""
    return self._process.poll()

  def stop(self) -> None:
    """Stops the worker (SIGINT, then SIGKILL after 5 s) and removes its log."""
    if self._process.poll() is None:
      self._process.send_signal(signal.SIGINT)
      try:
        self._process.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    if not self._log.closed:
      self._log.close()
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.log_path)


class _LocalWorkerService:
  """Keeps one live worker for a context, restarting it if it has died."""

  def __init__(self, max_concurrent_computation_calls: int):
    self._max_calls = max_concurrent_computation_calls
    self._worker: Optional[WorkerProcess] = None
    self._service_lock = threading.Lock()

  def stub(self) -> remote_executor_grpc_stub.RemoteExecutorGrpcStub:
    with self._service_lock:
      if self._worker is None or not self._worker.is_alive():
        if self._worker is not None:
          dead = self._worker
          _logger.warning(
              'TFF worker_binary (pid %d, port %d) exited with code %s; starting a new one (TFF retries the '
              'computation). Its log ends: %s', dead.pid, dead.port, dead.returncode, dead.log_tail(500) or '(empty)',
          )
          _forget(dead)
        self._worker = _start_worker(self._max_calls)
      return self._worker.stub

  def stop(self) -> None:
    with self._service_lock:
      if self._worker is not None:
        _forget(self._worker)
        self._worker = None


def _start_worker(max_concurrent_computation_calls: int) -> WorkerProcess:
  """Starts a worker, retrying on another port: seen here, a worker_binary
  occasionally dies (SIGSEGV) before serving."""
  failures = []
  for _ in range(_START_ATTEMPTS):
    try:
      worker = WorkerProcess(max_concurrent_computation_calls)
    except WorkerStartError as error:
      failures.append(str(error))
      continue
    with _lock:
      _workers.append(worker)
    return worker
  raise RuntimeError(f'TFF worker_binary failed to start {_START_ATTEMPTS} times: ' + ' | '.join(failures))


def _forget(worker: WorkerProcess) -> None:
  worker.stop()
  with _lock:
    if worker in _workers:
      _workers.remove(worker)


def running_workers() -> list[WorkerProcess]:
  """The workers this module started that are still running."""
  with _lock:
    return [w for w in _workers if w.is_alive()]


def shutdown() -> None:
  """Stops every worker this module started. Safe to call more than once."""
  with _lock:
    workers = list(_workers)
    _workers.clear()
  for worker in workers:
    worker.stop()


def _at_exit() -> None:
  """Stops our workers; drops TFF's import-time default context while Python
  is still whole (its destructor fails noisily during interpreter teardown)."""
  shutdown()
  context_stack_impl.context_stack.set_default_context(runtime_error_context.RuntimeErrorContext())


atexit.register(_at_exit)


def _create_context(
    service: _LocalWorkerService,
    secure_intrinsics: bool,
    default_num_clients: int,
) -> sync_execution_context.SyncExecutionContext:
  service.stub()  # Start now, from the caller's thread (PDEATHSIG is per thread).

  def stack_fn(cardinalities):
    if cardinalities.get(placements.CLIENTS) is None:
      cardinalities[placements.CLIENTS] = default_num_clients
    executor = remote_executor.RemoteExecutor(service.stub())
    executor.set_cardinalities(cardinalities)
    return executor

  if secure_intrinsics:

    def compile_fn(comp):
      comp = test_compiler.replace_secure_intrinsics_with_bodies(comp)
      return native_compiler.desugar_and_transform_to_native(comp)

  else:
    compile_fn = native_compiler.desugar_and_transform_to_native

  return sync_execution_context.SyncExecutionContext(
      executor_fn=python_executor_stacks.ResourceManagingExecutorFactory(
          executor_stack_fn=stack_fn
      ),
      compiler_fn=compile_fn,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )


def set_simulation_context(
    *,
    secure_intrinsics: bool = True,
    default_num_clients: int = 0,
    max_concurrent_computation_calls: int = -1,
) -> None:
  """Sets TFF's default context to a local C++ worker that this module owns.

  Calling it again replaces the context and stops the previous one's worker
  (notebook cells can be re-run).

  Args:
    secure_intrinsics: Simulate `tff.federated_secure_sum*` with plain sums
      (TFF's test compiler). Without it, computations that use secure
      aggregation fail to execute.
    default_num_clients: Number of clients when a computation cannot infer it.
    max_concurrent_computation_calls: Passed to the worker; -1 for no limit.
  """
  global _default_service
  service = _LocalWorkerService(max_concurrent_computation_calls)
  context = _create_context(service, secure_intrinsics, default_num_clients)
  context_stack_impl.context_stack.set_default_context(context)
  previous, _default_service = _default_service, service
  if previous is not None:
    previous.stop()


@contextlib.contextmanager
def simulation_context(
    *,
    secure_intrinsics: bool = True,
    default_num_clients: int = 0,
    max_concurrent_computation_calls: int = -1,
) -> Iterator[None]:
  """Runs the body in a fresh simulation context; stops its worker on exit."""
  service = _LocalWorkerService(max_concurrent_computation_calls)
  try:
    context = _create_context(service, secure_intrinsics, default_num_clients)
    with context_stack_impl.context_stack.install(context):
      yield
  finally:
    service.stop()
