"""Execution contexts for simulation: TFF's sync context on our workers, or clients split across several.

Use `set_simulation_context()` once at program start, or
`with simulation_context(): ...` for a scoped context (tests, notebooks). By
default the context runs on a local worker_binary that `workers.py` starts
and owns.

`workers=['host:port', ...]` runs computations on worker_binaries that someone
else started (other hosts; docs/guide/remote-workers.md) instead of a local one.
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

import concurrent.futures
import contextlib
import functools
import re
import weakref
from collections.abc import Iterator, Sequence
from typing import Optional, Union

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.runtime import _tff_internal
from tff_orchestra.runtime import addresses
from tff_orchestra.runtime import workers as workers_lib

_default_services: list[workers_lib.WorkerService] = []


class NotSplittableError(ValueError):
  """A computation cannot be split across several workers (TFF's mergeable form)."""


def _executor_factory(service: workers_lib.WorkerService, default_num_clients: int):
  def stack_fn(cardinalities):
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    executor = tff.framework.RemoteExecutor(service.stub())
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)


def _without_secure_intrinsics(comp: tff.framework.ConcreteComputation) -> tff.framework.ConcreteComputation:
  """`comp` with `tff.federated_secure_sum*` as plain sums (TFF's test compiler), Python containers kept."""
  return tff.framework.ConcreteComputation.with_type(
      tff.backends.test.replace_secure_intrinsics_with_bodies(comp), comp.type_signature
  )


def _native_compiler(secure_intrinsics: bool):
  if not secure_intrinsics:
    return tff.backends.native.desugar_and_transform_to_native
  return lambda comp: tff.backends.native.desugar_and_transform_to_native(_without_secure_intrinsics(comp))


def _mergeable_compiler(secure_intrinsics: bool):
  def compile_fn(comp):
    if secure_intrinsics:
      comp = _without_secure_intrinsics(comp)
    try:
      return tff.backends.native.compile_to_mergeable_comp_form(comp)
    except ValueError as error:
      raise NotSplittableError(
          f'this computation cannot be split across several TFF workers: {error} (TFF splits only '
          'computations whose aggregations do not depend on one another); run it with one worker'
      ) from error

  return compile_fn


class _SplitAcrossWorkers(tff.framework.SyncContext):
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

  def __init__(self, contexts: Sequence[tff.framework.SyncContext], secure_intrinsics: bool):
    self._contexts = list(contexts)
    self._compiler = _tff_internal.CompilerPipeline(_mergeable_compiler(secure_intrinsics))

  def invoke(self, comp, arg):
    form = self._compiler.compile(comp)
    if arg is None:
      shares = [None] * len(self._contexts)
    else:
      shares = _tff_internal.split_value_into_subrounds(
          arg, form.up_to_merge.type_signature.parameter, len(self._contexts)
      )
    contexts = self._contexts[: len(shares)]
    with concurrent.futures.ThreadPoolExecutor(len(contexts)) as pool:
      partials = list(pool.map(lambda context, share: context.invoke(form.up_to_merge, share), contexts, shares))
      merged = partials[0]
      for partial in partials[1:]:
        merged = contexts[0].invoke(form.merge, tff.structure.Struct.unnamed(merged, partial))

      def after_merge(context, share):
        return context.invoke(form.after_merge, merged if share is None else tff.structure.Struct.unnamed(share, merged))

      result_type = form.after_merge.type_signature.result
      if tff.types.contains_only(
          result_type, lambda t: not isinstance(t, tff.FederatedType) or t.all_equal
      ):
        result = after_merge(contexts[0], shares[0])
      else:
        result = _tff_internal.repackage_partitioned_values(
            list(pool.map(after_merge, contexts, shares)), result_type
        )
    return tff.types.type_to_py_container(result, result_type)


def _failed_assertion(error: grpc.RpcError) -> Optional[str]:
  """The message of a TensorFlow assertion that failed on a worker, or None for any other gRPC error."""
  details = error.details() if isinstance(error, grpc.Call) else None
  if not details or 'assertion failed: [' not in details:
    return None
  first_line = details.split('assertion failed: ', 1)[1].splitlines()[0]
  message, *data = re.findall(r'\[([^\[\]]*)\]', first_line) or [first_line]
  return f'{message} ({" ".join(data)})' if data else message


class _SyncContext(tff.framework.SyncExecutionContext):
  """TFF's sync context; a TensorFlow assertion that fails on the worker is raised as TensorFlow raises it.

  TFF reports it as a gRPC `INTERNAL` error, its message inside a page of
  traceback; here it is `tf.errors.InvalidArgumentError` with the assertion's
  message and data, as in eager TensorFlow.
  """

  def invoke(self, comp, arg):
    try:
      return super().invoke(comp, arg)
    except grpc.RpcError as error:
      message = _failed_assertion(error)
      if message is None:
        raise
    raise tf.errors.InvalidArgumentError(None, None, message)


def _context_kwargs(service: workers_lib.WorkerService, secure_intrinsics: bool, default_num_clients: int) -> dict:
  return dict(
      executor_fn=_executor_factory(service, default_num_clients),
      compiler_fn=_native_compiler(secure_intrinsics),
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def _create_context(
    services: Sequence[workers_lib.WorkerService],
    secure_intrinsics: bool,
    default_num_clients: int,
) -> tff.framework.SyncContext:
  """One worker: TFF's usual context on it. Several: clients split across them."""
  workers_lib.register_exit_hook()
  for service in services:
    service.stub()  # A local worker starts now, from the caller's thread (PDEATHSIG is per thread).
  if len(services) == 1:
    context = _SyncContext(
        **_context_kwargs(services[0], secure_intrinsics, default_num_clients)
    )
  else:
    context = _SplitAcrossWorkers(
        [
            _SyncContext(
                **_context_kwargs(service, secure_intrinsics, default_num_clients)
            )
            for service in services
        ],
        secure_intrinsics,
    )
  _runs_secure_sums[context] = secure_intrinsics
  return context


# The contexts this module made, and whether each runs secure sums.
_runs_secure_sums: 'weakref.WeakKeyDictionary[object, bool]' = weakref.WeakKeyDictionary()


class ContextCannotRunSecureSumsError(RuntimeError):
  """The current TFF execution context would fail on a secure sum (TFF's default context does)."""


@functools.cache
def _a_secure_sum() -> tff.Computation:
  @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
  def secure_sum(value):
    return tff.federated_secure_sum_bitwidth(value, 8)

  return secure_sum


def runs_secure_sums(context: object) -> Optional[bool]:
  """Whether `context` runs `tff.federated_secure_sum*`; None when that cannot be told without executing.

  Ours say so when made. For any other `tff.framework.SyncExecutionContext`,
  a two-line secure sum is compiled (not executed) with the context's own
  compiler: a context whose compiler keeps the secure intrinsic (TFF's
  default one) hands it to TFF's C++ executor, which does not implement it;
  one whose compiler replaces it (TFF's test context, ours) runs it.
  """
  if context in _runs_secure_sums:
    return _runs_secure_sums[context]
  compiler = _tff_internal.compiler_of(context)
  if compiler is None:
    return None
  try:
    tff.test.assert_contains_secure_aggregation(compiler.compile(_a_secure_sum()))
  except AssertionError:
    return True
  return False


def check_context(factory_name: str, *, secure_sums: bool) -> None:
  """Called by our factories' `create()`: makes the program's end clean, and refuses a context that cannot run them.

  Registers the exit hook (TFF's import-time context otherwise leaves its
  worker running and prints a destructor error at exit). With `secure_sums`,
  raises `ContextCannotRunSecureSumsError` when the current execution context
  is known not to run secure sums (`runs_secure_sums`), instead of the gRPC
  "Cannot embed a federated value" that `next()` would end in. Nothing is
  executed to find out.
  """
  workers_lib.register_exit_hook()
  context = tff.framework.get_context_stack().current
  if secure_sums and runs_secure_sums(context) is False:
    raise ContextCannotRunSecureSumsError(
        f"{factory_name}: the current TFF execution context cannot run secure sums (TFF's default context "
        'hands tff.federated_secure_sum_bitwidth to its C++ executor, which does not implement it); call '
        'tff_orchestra.runtime.set_simulation_context() before create(), or use '
        'tff.backends.test.set_sync_test_cpp_execution_context()'
    )


def _services(
    workers: Optional[Union[str, Sequence[str]]],
    max_concurrent_computation_calls: int,
    connect_timeout: float,
) -> list[workers_lib.WorkerService]:
  if workers is None:
    return [workers_lib.LocalWorkerService(max_concurrent_computation_calls)]
  if max_concurrent_computation_calls != -1:
    raise ValueError(
        'max_concurrent_computation_calls applies to a local worker; give remote workers the flag '
        '--max_concurrent_computation_calls where you start them'
    )
  if not connect_timeout > 0:
    raise ValueError(f'connect_timeout must be > 0 seconds, got {connect_timeout}')
  return [workers_lib.RemoteWorker(address, connect_timeout) for address in addresses.parse_worker_addresses(workers)]


def _stop_all(services: Sequence[workers_lib.WorkerService]) -> None:
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
  tff.framework.set_default_context(context)
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
    with tff.framework.get_context_stack().install(context):
      yield
  finally:
    _stop_all(services)
