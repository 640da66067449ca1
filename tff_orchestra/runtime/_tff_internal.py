"""The fence: every private TensorFlow Federated 0.87 name this package uses, and why.

The rest of the package uses public TFF only (`tff.framework`, `tff.backends`,
`tff.types`, `tff.structure`, ...). Each name below has no public counterpart
in 0.87; a test checks that no other module imports `tensorflow_federated.python`.
"""

# pylint: disable=unused-import,protected-access
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context

# The context TFF installs when none may run. `workers._at_exit` sets it before
# interpreter teardown, where the destructor of TFF's import-time default context
# fails noisily. Public API missing: a way to clear the default context.
RuntimeErrorContext = runtime_error_context.RuntimeErrorContext

# Compiles a computation once and caches the result by computation, as TFF's own
# execution contexts do. Public API missing: TFF exports no compiler cache.
CompilerPipeline = compiler_pipeline.CompilerPipeline

# Splits a federated argument into one share of the clients per worker, and puts
# the per-share results of values placed at the clients back together: the two
# halves of `tff.framework.MergeableCompExecutionContext.invoke`, which
# `contexts._SplitAcrossWorkers` runs on threads of its own (see there).
# Public API missing: the context's splitting and repackaging are not exported.
split_value_into_subrounds = mergeable_comp_execution_context._split_value_into_subrounds
repackage_partitioned_values = mergeable_comp_execution_context._repackage_partitioned_values


def compiler_of(context: object):
  """The compiler pipeline that `context` runs before executing, or None if it is not a `SyncExecutionContext`.

  `contexts.check_context` compiles a two-line secure sum with it (nothing is
  executed) to learn whether the context runs secure sums. Public API missing:
  a context does not say which compiler it uses.
  """
  async_context = getattr(context, '_async_context', None)
  return getattr(async_context, '_compiler_pipeline', None)


def distributed_dp_sum_factory(**kwargs):
  """TFF's distributed DP aggregator (Kairouz, Liu and Steinke 2021), built with `kwargs`.

  `benchmarks/aggregation_overhead.py` times `DistributedDiscreteGaussian`
  against it. Imported on call: it loads tensorflow_privacy. Public API
  missing: 0.87 has it only as `tensorflow_federated.python.aggregators.distributed_dp`.
  """
  from tensorflow_federated.python.aggregators import distributed_dp  # pylint: disable=import-outside-toplevel

  return distributed_dp.DistributedDpSumFactory(**kwargs)
