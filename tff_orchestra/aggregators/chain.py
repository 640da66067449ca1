"""`chain`: compose factories in the order data flows, client -> server.

    chain(ClusterQualityWeighting(4), GaussianNoise(0.5, clip=1.0, expected_clients_per_round=10),
          SecureFixedPointSum(bits=20))

builds, innermost last,

    ClusterQualityWeighting(4, inner_factory=MeanFactory(
        value_sum_factory=GaussianNoise(0.5, clip=1.0, ..., output='sum',
                                        inner_factory=SecureFixedPointSum(bits=20)),
        weight_sum_factory=<weight_sum_factory>))

A chain is a model aggregator, so it yields the mean of the client values
(`composition`'s rule), weighted if its first stage is weighted. Each stage but
the last wraps the stages after it. A stage is

* a factory that follows the `ComposableStage` protocol (this library's, or a
  user's: `ComposableFactory` implements it): rebuilt with the rest of the
  chain as its inner factory, the rest first made to yield what the stage
  takes (`inner_output`, through `with_output`);
* a callable `inner -> factory`, for TFF's wrappers, for example
  `functools.partial(tff.aggregators.clipping_factory, 1.0)`: called with the
  rest of the chain as it is; the factory it returns yields what it declares,
  else what the rest yields (TFF's wrappers pass it through);
* for the last stage only, any factory (TFF's `SecureSumFactory`, ...).

Where a stage that takes a weighted inner factory meets unweighted stages,
the unweighted rest becomes the `value_sum_factory` of a
`tff.aggregators.MeanFactory` (so it must yield a sum), whose weights are
summed by `weight_sum_factory`. If the outermost stage yields a sum, the chain
divides it by the number of clients that took part
(`tff.aggregators.UnweightedMeanFactory`, counted by `weight_sum_factory`).
An unweighted stage followed by a weighted one is an error: weights cannot be
recovered once dropped. So is a stage that collects each client's value
(`collects_client_values`: the robust estimates) in a chain with a secure
sum: the server would see every value, and the secure sum would hide nothing.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Union

import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators.composition import MEAN, SUM, UNWEIGHTED, WEIGHTED, Factory

Stage = Union[Factory, Callable[[Factory], Factory]]


def chain(*stages: Stage, weight_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None) -> Factory:
  """Nests `stages` (client -> server order) into one factory yielding the mean.

  Args:
    *stages: `ComposableStage` factories, callables `inner -> factory`, and,
      as the last stage, any TFF aggregation factory.
    weight_sum_factory: Sums the weights (or counts the clients) where the
      chain averages a sum. Default `tff.aggregators.SumFactory()`.

  Returns:
    A `WeightedAggregationFactory` if the first stage is weighted, else an
    `UnweightedAggregationFactory`; either yields the mean of the client values.

  Raises:
    ValueError: No stages, an unweighted stage before a weighted one, a
      stage that cannot yield what its position needs, or a robust estimate
      beside a secure sum.
    TypeError: A stage that is neither a factory nor a callable, a plain
      factory before the last stage, or a callable that returns no factory.
  """
  if not stages:
    raise ValueError('chain needs at least one stage')
  if weight_sum_factory is not None:
    _checks.check_factory(weight_sum_factory, 'weight_sum_factory', weighted=False)
  weight_sum_factory = weight_sum_factory or tff.aggregators.SumFactory()
  _check_no_secure_sum_beside_collection(stages, weight_sum_factory)
  last = stages[-1]
  if not composition.is_factory(last):
    raise TypeError(f'chain: the last stage must be an aggregation factory, got {composition.describe(last)}')
  inner, output = last, composition.output_of(last)
  for position in range(len(stages) - 2, -1, -1):
    stage = stages[position]
    if composition.is_factory(stage) and isinstance(stage, composition.ComposableStage) and stage.inner_kind:
      inner = _wrap(stage, position, inner, output, weight_sum_factory)
      output = inner.output
    elif composition.is_factory(stage):
      raise TypeError(
          f'chain: stage {position} ({type(stage).__name__}) takes no inner factory; only the last '
          'stage can be such a factory. Wrap TFF factories as callables, e.g. '
          'functools.partial(tff.aggregators.clipping_factory, 1.0)'
      )
    elif callable(stage):
      inner = _call(stage, position, inner)
      output = composition.declared_output(inner) or output
    else:
      raise TypeError(f'chain: stage {position} must be a factory or a callable inner -> factory, got {type(stage).__name__}')
  return _averaged(inner, output, weight_sum_factory)


def _check_no_secure_sum_beside_collection(stages, weight_sum_factory) -> None:
  """ValueError if a stage sends each client's value to the server and another sums securely."""
  factories = [f for stage in (*stages, weight_sum_factory) for f in composition.factories_within(stage)]
  collecting = [f for f in factories if getattr(f, 'collects_client_values', False)]
  secure = [f for f in factories if composition.is_secure(f)]
  if collecting and secure:
    raise ValueError(
        f'chain: {type(collecting[0]).__name__} sends each client\'s value to the server in the clear, so '
        f'{composition.describe(secure[0])} in the same chain would hide nothing; robust estimates cannot be '
        'combined with a secure sum: drop one of them'
    )


def _wrap(stage, position: int, inner: Factory, output: str, weight_sum_factory) -> Factory:
  """`stage` rebuilt around `inner`, crossing to a weighted mean where the kinds change."""
  name = type(stage).__name__
  if stage.inner_kind == WEIGHTED and not composition.is_weighted(inner):
    role = f'the value_sum_factory of the weighted mean that {name} (stage {position}) feeds'
    inner = _weighted_mean(_fitted(inner, output, SUM, role), weight_sum_factory)
    output = MEAN
  elif stage.inner_kind == UNWEIGHTED and composition.is_weighted(inner):
    raise ValueError(
        f'chain: stage {position} ({name}) is unweighted but the stage after it '
        f'({type(inner).__name__}) is weighted; put weighted stages first'
    )
  if stage.inner_output is not None:
    inner = _fitted(inner, output, stage.inner_output, f'the inner factory of {name} (stage {position})')
  return stage.with_inner(inner)


def _fitted(factory: Factory, output: str, wanted: str, role: str) -> Factory:
  """`factory` (yielding `output`) made to yield `wanted`, or a ValueError that says how."""
  if output == wanted:
    return factory
  name = type(factory).__name__
  if isinstance(factory, composition.ComposableStage):
    try:
      return factory.with_output(wanted)
    except (TypeError, ValueError) as error:
      raise ValueError(f'chain: {name} must yield the {wanted} as {role}: {error}') from error
  raise ValueError(
      f'chain: {name} yields the {output} of the client values, but as {role} it must yield '
      f'the {wanted}; give the stage that sums output={wanted!r}'
  )


def _weighted_mean(value_sum: Factory, weight_sum_factory) -> Factory:
  if _contains_noise(value_sum):
    warnings.warn(
        'chain: a MeanFactory joins the weighted stages to a differentially private stage; '
        'it sums the client weights without noise. The DP guarantee then covers the model '
        'update only if the weights do not depend on client data (ClientWeighting.UNIFORM '
        'and no ClusterQualityWeighting), or if weight_sum_factory is itself differentially private.',
        UserWarning,
        stacklevel=4,
    )
  return tff.aggregators.MeanFactory(
      value_sum_factory=value_sum, weight_sum_factory=weight_sum_factory, no_nan_division=True
  )


def _contains_noise(factory: Any) -> bool:
  """Whether a stage in `factory`'s inner factories declares `differentially_private`."""
  while factory is not None:
    if getattr(factory, 'differentially_private', False):
      return True
    factory = getattr(factory, 'inner_factory', None)
  return False


def _call(stage: Callable[[Factory], Factory], position: int, inner: Factory) -> Factory:
  built = stage(inner)
  if not composition.is_factory(built):
    raise TypeError(
        f'chain: stage {position} ({composition.describe(stage)}) returned {type(built).__name__}, '
        'not an aggregation factory'
    )
  return built


def _averaged(top: Factory, output: str, weight_sum_factory) -> Factory:
  """The chain's result: `top` if it yields a mean, else `top` over the number of clients."""
  if output == MEAN:
    return top
  if composition.is_weighted(top):
    raise ValueError(f'chain: the weighted stage {type(top).__name__} yields a sum; a chain must yield the mean')
  return tff.aggregators.UnweightedMeanFactory(value_sum_factory=top, count_sum_factory=weight_sum_factory)
