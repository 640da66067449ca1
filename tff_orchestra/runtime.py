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

`workers=['host:port', ...]` runs computations on worker_binaries that someone
else started (other hosts; README "Remote workers") instead of a local one.
With several workers, each computation is compiled to TFF's mergeable form and
its clients are split across the workers: every worker runs the client work of
its share of the clients up to the aggregation, the partial aggregates are
merged, and one worker runs the server work after it (`_SplitAcrossWorkers`).
A remote worker that stops answering is not ours to restart: the call raises
`WorkerUnavailableError` naming it (after `connect_timeout` seconds), instead
of TFF's endless retries.

`secure_intrinsics=True` (the default) compiles `tff.federated_secure_sum*`
into plain sums, as TFF's test context does: the only way to run secure
aggregation in a single-process simulation. The static check
`tff.test.assert_not_contains_unsecure_aggregation` still sees the secure
intrinsics, because it inspects the computation before this compilation.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Optional, Protocol, Union

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import compiler as native_compiler
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context
from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions

__all__ = [
    'NotSplittableError',
    'WorkerProcess',
    'WorkerStartError',
    'WorkerUnavailableError',
    'parse_worker_addresses',
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
_default_services: list['_WorkerService'] = []


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


class NotSplittableError(ValueError):
  """A computation cannot be split across several workers (TFF's mergeable form)."""


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


class _WorkerService(Protocol):
  """Where a context's executors live: `stub()` for each new executor, `stop()` at the end."""

  def stub(self) -> remote_executor_grpc_stub.RemoteExecutorGrpcStub: ...

  def stop(self) -> None: ...


class _RemoteWorker:
  """A worker_binary someone else started and keeps running, reached at `host:port`."""

  def __init__(self, address: str, connect_timeout: float):
    self.address = address
    self._connect_timeout = connect_timeout
    self._channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
    self._stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(self._channel)
    self._connect_requested_at = -float('inf')

  def stub(self) -> remote_executor_grpc_stub.RemoteExecutorGrpcStub:
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
          '(README, "Remote workers")'
      ) from None
    return self._stub

  def stop(self) -> None:
    # gRPC's connectivity-polling thread picks up a requested connection
    # attempt within 0.2 s, and raises if the channel closed in between.
    time.sleep(max(0.0, self._connect_requested_at + 0.3 - time.monotonic()))
    self._channel.close()


def parse_worker_addresses(workers: Union[str, Sequence[str]]) -> list[str]:
  """`'host:port,host:port'` or a list of `'host:port'` -> the list, checked."""
  items = workers.split(',') if isinstance(workers, str) else list(workers)
  addresses = []
  for item in items:
    host, _, port = str(item).strip().rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"workers: expected 'host:port' addresses (port 1-65535), got {item!r}")
    addresses.append(f'{host}:{int(port)}')
  if not addresses:
    raise ValueError('workers: expected at least one host:port address')
  if len(set(addresses)) != len(addresses):
    raise ValueError(f'workers: each worker once, got {addresses}')
  return addresses


def _executor_factory(service: _WorkerService, default_num_clients: int):
  def stack_fn(cardinalities):
    if cardinalities.get(placements.CLIENTS) is None:
      cardinalities[placements.CLIENTS] = default_num_clients
    executor = remote_executor.RemoteExecutor(service.stub())
    executor.set_cardinalities(cardinalities)
    return executor

  return python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)


def _without_secure_intrinsics(comp: computation_impl.ConcreteComputation) -> computation_impl.ConcreteComputation:
  """`comp` with `tff.federated_secure_sum*` as plain sums (TFF's test compiler), Python containers kept."""
  return computation_impl.ConcreteComputation.with_type(
      test_compiler.replace_secure_intrinsics_with_bodies(comp), comp.type_signature
  )


def _native_compiler(secure_intrinsics: bool):
  if not secure_intrinsics:
    return native_compiler.desugar_and_transform_to_native
  return lambda comp: native_compiler.desugar_and_transform_to_native(_without_secure_intrinsics(comp))


def _mergeable_compiler(secure_intrinsics: bool):
  def compile_fn(comp):
    if secure_intrinsics:
      comp = _without_secure_intrinsics(comp)
    try:
      return mergeable_comp_compiler.compile_to_mergeable_comp_form(comp)
    except ValueError as error:
      raise NotSplittableError(
          f'this computation cannot be split across several TFF workers: {error} (TFF splits only '
          'computations whose aggregations do not depend on one another); run it with one worker'
      ) from error

  return compile_fn


class _SplitAcrossWorkers(context_base.SyncContext):
  """Runs each computation with its clients split across several workers.

  The computation is compiled to TFF's mergeable form (`up_to_merge`, `merge`,
  `after_merge`): every worker runs `up_to_merge` on its share of the
  clients, the partial aggregates are merged, and `after_merge` runs once (or
  on every share, when it returns values placed at the clients). This is what
  TFF's `MergeableCompExecutionContext` does, with two differences:

  * the shares run on a thread each: TFF 0.87's `RemoteExecutor` makes
    blocking gRPC calls inside its coroutines (its TODO b/134543154), so TFF's
    context, whose workers share one event loop, runs them one after another;
  * partial aggregates merge in worker order, not in the order they finish,
    so the floating-point sums, and the order in which Orchestra's local
    centroids are collected, do not depend on timing.
  """

  def __init__(self, contexts: Sequence[context_base.SyncContext], secure_intrinsics: bool):
    self._contexts = list(contexts)
    self._compiler = compiler_pipeline.CompilerPipeline(_mergeable_compiler(secure_intrinsics))

  def invoke(self, comp, arg):
    form = self._compiler.compile(comp)
    if arg is None:
      shares = [None] * len(self._contexts)
    else:
      shares = mergeable_comp_execution_context._split_value_into_subrounds(  # pylint: disable=protected-access
          arg, form.up_to_merge.type_signature.parameter, len(self._contexts)
      )
    contexts = self._contexts[: len(shares)]
    with concurrent.futures.ThreadPoolExecutor(len(contexts)) as pool:
      partials = list(pool.map(lambda context, share: context.invoke(form.up_to_merge, share), contexts, shares))
      merged = partials[0]
      for partial in partials[1:]:
        merged = contexts[0].invoke(form.merge, structure.Struct.unnamed(merged, partial))

      def after_merge(context, share):
        return context.invoke(form.after_merge, merged if share is None else structure.Struct.unnamed(share, merged))

      result_type = form.after_merge.type_signature.result
      if type_analysis.contains_only(
          result_type, lambda t: not isinstance(t, computation_types.FederatedType) or t.all_equal
      ):
        result = after_merge(contexts[0], shares[0])
      else:
        result = mergeable_comp_execution_context._repackage_partitioned_values(  # pylint: disable=protected-access
            list(pool.map(after_merge, contexts, shares)), result_type
        )
    return type_conversions.type_to_py_container(result, result_type)


def _context_kwargs(service: _WorkerService, secure_intrinsics: bool, default_num_clients: int) -> dict:
  return dict(
      executor_fn=_executor_factory(service, default_num_clients),
      compiler_fn=_native_compiler(secure_intrinsics),
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )


def _create_context(
    services: Sequence[_WorkerService],
    secure_intrinsics: bool,
    default_num_clients: int,
) -> context_base.SyncContext:
  """One worker: TFF's usual context on it. Several: clients split across them."""
  for service in services:
    service.stub()  # A local worker starts now, from the caller's thread (PDEATHSIG is per thread).
  if len(services) == 1:
    return sync_execution_context.SyncExecutionContext(
        **_context_kwargs(services[0], secure_intrinsics, default_num_clients)
    )
  return _SplitAcrossWorkers(
      [
          sync_execution_context.SyncExecutionContext(
              **_context_kwargs(service, secure_intrinsics, default_num_clients)
          )
          for service in services
      ],
      secure_intrinsics,
  )


def _services(
    workers: Optional[Union[str, Sequence[str]]],
    max_concurrent_computation_calls: int,
    connect_timeout: float,
) -> list[_WorkerService]:
  if workers is None:
    return [_LocalWorkerService(max_concurrent_computation_calls)]
  if max_concurrent_computation_calls != -1:
    raise ValueError(
        'max_concurrent_computation_calls applies to a local worker; give remote workers the flag '
        '--max_concurrent_computation_calls where you start them'
    )
  if not connect_timeout > 0:
    raise ValueError(f'connect_timeout must be > 0 seconds, got {connect_timeout}')
  return [_RemoteWorker(address, connect_timeout) for address in parse_worker_addresses(workers)]


def _stop_all(services: Sequence[_WorkerService]) -> None:
  for service in services:
    service.stop()


def set_simulation_context(
    *,
    workers: Optional[Union[str, Sequence[str]]] = None,
    secure_intrinsics: bool = True,
    default_num_clients: int = 0,
    max_concurrent_computation_calls: int = -1,
    connect_timeout: float = 30.0,
) -> None:
  """Sets TFF's default context to a local C++ worker that this module owns, or to remote workers.

  Calling it again replaces the context and stops the previous one's worker
  (notebook cells can be re-run).

  Args:
    workers: None to start (and own) a local worker_binary; or the addresses
      (`'host:port'`, a list or one comma-separated string) of worker_binaries
      already running, which are then used instead. Several workers split
      each computation's clients among them (see the module docstring).
    secure_intrinsics: Simulate `tff.federated_secure_sum*` with plain sums
      (TFF's test compiler). Without it, computations that use secure
      aggregation fail to execute.
    default_num_clients: Number of clients when a computation cannot infer it.
    max_concurrent_computation_calls: Passed to a local worker; -1 for no
      limit. Remote workers take it as a flag where they are started.
    connect_timeout: Seconds to wait for a remote worker to answer (at the
      start, and when a connection is lost) before `WorkerUnavailableError`.
  """
  services = _services(workers, max_concurrent_computation_calls, connect_timeout)
  try:
    context = _create_context(services, secure_intrinsics, default_num_clients)
  except BaseException:
    _stop_all(services)
    raise
  context_stack_impl.context_stack.set_default_context(context)
  previous = list(_default_services)
  _default_services[:] = services
  _stop_all(previous)


@contextlib.contextmanager
def simulation_context(
    *,
    workers: Optional[Union[str, Sequence[str]]] = None,
    secure_intrinsics: bool = True,
    default_num_clients: int = 0,
    max_concurrent_computation_calls: int = -1,
    connect_timeout: float = 30.0,
) -> Iterator[None]:
  """Runs the body in a fresh context (a local worker, or `workers`); stops a local worker on exit.

  Arguments as for `set_simulation_context`.
  """
  services = _services(workers, max_concurrent_computation_calls, connect_timeout)
  try:
    context = _create_context(services, secure_intrinsics, default_num_clients)
    with context_stack_impl.context_stack.install(context):
      yield
  finally:
    _stop_all(services)

