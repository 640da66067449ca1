"""Worker processes: local `worker_binary`s that do not outlive us, and remote ones.

TFF 0.87 runs computations in a C++ `worker_binary` that it starts as a
subprocess. Left to itself, that process outlives the Python program that
started it and keeps the program's stdout/stderr open, so `python x.py | tee`
hangs. `WorkerProcess` starts the worker itself so that it

* dies with its parent, even on SIGKILL (Linux `PR_SET_PDEATHSIG`, set by a
  tiny launcher that then exec()s the worker),
* is stopped at interpreter exit (`atexit`, registered when the first worker
  or context is made) and by `shutdown()`,
* writes its log to an unlinked temporary file (`WorkerProcess.log_tail()`
  reads it) instead of the caller's terminal, so nothing is left behind.

A context reaches its workers through a service: `LocalWorkerService` keeps
one live local worker (restarting one that died), `RemoteWorker` a
worker_binary someone else started at `host:port`, which is not ours to
restart: when it stops answering, `WorkerUnavailableError` names it.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional, Protocol

import grpc
import portpicker
import tensorflow_federated as tff

from tff_orchestra.runtime import _tff_internal

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
_exit_hook_registered = False


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


class WorkerUnavailableError(RuntimeError):
  """A remote worker_binary did not answer: it died, or its address is wrong."""


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
    self.stub = tff.framework.RemoteExecutorGrpcStub(channel)
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
  def address(self) -> str:
    """`localhost:port`, for `simulation_context(workers=[...])`."""
    return f'localhost:{self.port}'

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


class LocalWorkerService:
  """Keeps one live worker for a context, restarting it if it has died."""

  def __init__(self, max_concurrent_computation_calls: int):
    self._max_calls = max_concurrent_computation_calls
    self._worker: Optional[WorkerProcess] = None
    self._service_lock = threading.Lock()

  def stub(self) -> tff.framework.RemoteExecutorGrpcStub:
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
    register_exit_hook()
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


# How TFF's own local executor factory starts its worker (`executor_factory.local_cpp_executor_factory`).
_TFFS_WORKER_PATH = os.path.join('executor_stacks', '..', '..', '..', '..', 'data', 'worker_binary')


def _tffs_worker_children() -> list[int]:
  """PIDs of running worker_binaries that TFF's own contexts started as children of this process (Linux)."""
  children = []
  for entry in os.listdir('/proc') if os.path.isdir('/proc') else []:
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as file:
        fields = file.read().rsplit(')', 1)[1].split()
      with open(f'/proc/{entry}/cmdline', 'rb') as file:
        executable = file.read().split(b'\0', 1)[0].decode(errors='replace')
    except OSError:
      continue
    if fields[0] != 'Z' and int(fields[1]) == os.getpid() and executable.endswith(_TFFS_WORKER_PATH):
      children.append(int(entry))
  return children


def _at_exit() -> None:
  """Stops our workers, and the workers of TFF's own contexts, while Python is still whole.

  TFF's contexts (the import-time default one, the test context) stop their
  worker in a destructor that sends SIGINT and waits without a timeout: it
  fails noisily during interpreter teardown, never runs when the context is
  still referenced, and waits forever if the worker does not exit (a full
  test run saw the worker outlive the program, holding its stdout open). So
  TFF's workers are killed first (left as zombies, which the destructor's
  wait reaps at once), then the default context is dropped and reference
  cycles collected, so that the destructors run now, quietly.
  """
  shutdown()
  for pid in _tffs_worker_children():
    with contextlib.suppress(OSError):
      os.kill(pid, signal.SIGKILL)
  tff.framework.set_default_context(_tff_internal.RuntimeErrorContext())
  gc.collect()


def register_exit_hook() -> None:
  """Registers `_at_exit` once, when a context or a worker is first made (not at import)."""
  global _exit_hook_registered
  with _lock:
    if not _exit_hook_registered:
      atexit.register(_at_exit)
      _exit_hook_registered = True


class WorkerService(Protocol):
  """Where a context's executors live: `stub()` for each new executor, `stop()` at the end."""

  def stub(self) -> tff.framework.RemoteExecutorGrpcStub: ...

  def stop(self) -> None: ...


class RemoteWorker:
  """A worker_binary someone else started and keeps running, reached at `host:port`."""

  def __init__(self, address: str, connect_timeout: float):
    self.address = address
    self._connect_timeout = connect_timeout
    self._channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
    self._stub = tff.framework.RemoteExecutorGrpcStub(self._channel)
    self._connect_requested_at = -float('inf')

  def stub(self) -> tff.framework.RemoteExecutorGrpcStub:
    """The stub, once the worker answers; raises `WorkerUnavailableError` if it does not in time.

    TFF asks for a new executor (so calls this) on every retry after a lost
    connection; without this check it would retry forever.
    """
    if self._stub.is_ready:
      return self._stub
    self._connect_requested_at = time.monotonic()
    try:
      grpc.channel_ready_future(self._channel).result(timeout=self._connect_timeout)
    except grpc.FutureTimeoutError:
      raise WorkerUnavailableError(
          f'TFF worker at {self.address} did not answer within {self._connect_timeout:g} s: it stopped, or '
          'nothing serves at that address. A remote worker is not restarted by this program: start it again '
          '(docs/guide/remote-workers.md)'
      ) from None
    return self._stub

  def stop(self) -> None:
    # gRPC's connectivity-polling thread picks up a requested connection
    # attempt within 0.2 s, and raises if the channel closed in between.
    time.sleep(max(0.0, self._connect_requested_at + 0.3 - time.monotonic()))
    self._channel.close()
