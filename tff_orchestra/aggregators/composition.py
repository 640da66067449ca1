"""What an aggregator's result means, decided here once, and the protocol `chain` composes.

The rule, as TFF has it: **a factory used as the whole model aggregator yields the
mean of the client updates** (weighted or unweighted as its kind says), **and a
factory in an inner sum position (`value_sum_factory`, the inner factory of a
stage that sums) yields their sum.**

* `output_of(factory)` says which one a factory yields: what it declares
  (`factory.output`), else what TFF's own factories are known to yield, else
  `'mean'`, the meaning TFF's learners give any `model_aggregator`.
* `as_model_aggregator(factory)` is the gate of this library's learner (and so of
  the CLI and the notebooks that train with it): a mean passes (an unweighted one
  ignores the weights, as `build_unweighted_fed_avg` does), a sum is refused with
  what to write instead. `chain` builds by the same rule, so what it returns is a
  mean wherever it goes, TFF's own fed-avg included.
* `ComposableStage` is the protocol that lets any factory, ours or a user's,
  take part in `chain`; `ComposableFactory` implements its plumbing
  (`inner_factory`, `with_inner`, `with_output`, `replace`, `__repr__`) once.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Optional, Protocol, Union, runtime_checkable

import tensorflow_federated as tff

SUM = 'sum'
MEAN = 'mean'
OUTPUTS = (SUM, MEAN)
WEIGHTED = 'weighted'
UNWEIGHTED = 'unweighted'

Factory = Union[tff.aggregators.WeightedAggregationFactory, tff.aggregators.UnweightedAggregationFactory]

# TFF's factories cannot declare `output`: what each yields, from its documentation.
_TFF_OUTPUTS = {
    tff.aggregators.SumFactory: SUM,
    tff.aggregators.SecureSumFactory: SUM,
    tff.aggregators.SecureModularSumFactory: SUM,
    tff.aggregators.MeanFactory: MEAN,
    tff.aggregators.UnweightedMeanFactory: MEAN,
}


@runtime_checkable
class ComposableStage(Protocol):
  """What a factory offers to take part in `chain` as a stage that wraps the rest.

  * `output`: `'sum'` or `'mean'`, what its result is.
  * `inner_kind`: `'weighted'` or `'unweighted'`, the kind of inner factory it
    takes; `None` for a factory that takes none (it can only be a chain's last stage).
  * `inner_output`: what its inner factory must yield (`'sum'`, `'mean'`), or
    `None` if any (its own output then follows the inner's).
  * `with_inner(inner)`: a copy of it with another inner factory.
  * `with_output(output)`: a copy of it that yields `output`, or an error
    saying why it cannot.

  Whether it is weighted is its TFF base class.
  """

  inner_kind: Optional[str]
  inner_output: Optional[str]

  @property
  def output(self) -> str:
    ...

  def with_inner(self, inner_factory: Factory) -> Factory:
    ...

  def with_output(self, output: str) -> Factory:
    ...


def is_factory(value: Any) -> bool:
  return isinstance(
      value, (tff.aggregators.WeightedAggregationFactory, tff.aggregators.UnweightedAggregationFactory)
  )


def is_weighted(factory: Factory) -> bool:
  return isinstance(factory, tff.aggregators.WeightedAggregationFactory)


def declared_output(factory: Factory) -> Optional[str]:
  """`'sum'`/`'mean'` if `factory` declares it or is a TFF factory known here, else None."""
  output = getattr(factory, 'output', None)
  if output in OUTPUTS:
    return output
  return _TFF_OUTPUTS.get(type(factory))


def output_of(factory: Factory) -> str:
  """What `factory`'s result is: `'sum'` or `'mean'` of the client values.

  A factory that declares nothing is taken as TFF's learners take every
  `model_aggregator`: as a mean.
  """
  return declared_output(factory) or MEAN


_TFF_SECURE = (tff.aggregators.SecureSumFactory, tff.aggregators.SecureModularSumFactory)


def is_secure(factory: Any) -> bool:
  """Whether `factory` sums with TFF's secure intrinsics: TFF's secure sums, or a factory declaring `secure = True`."""
  return isinstance(factory, _TFF_SECURE) or getattr(factory, 'secure', False) is True


def factories_within(factory: Any) -> list[Factory]:
  """`factory` and every factory among its constructor arguments (`ComposableFactory`), recursively."""
  found = [factory]
  for argument in getattr(factory, '_arguments', {}).values():
    if is_factory(argument):
      found.extend(factories_within(argument))
  return found


def describe(factory: Any) -> str:
  return getattr(factory, '__name__', None) or type(factory).__name__


def as_model_aggregator(factory: Factory, argument: str = 'model_update_aggregation_factory') -> tff.aggregators.WeightedAggregationFactory:
  """`factory` as a learner's model aggregator: a weighted factory yielding the mean update.

  Raises:
    TypeError: `factory` is not a TFF aggregation factory.
    ValueError: `factory` yields the sum of the updates: the model would move by it.
  """
  if not is_factory(factory):
    raise TypeError(
        f'{argument} must be a tff.aggregators.WeightedAggregationFactory or '
        f'UnweightedAggregationFactory, got {type(factory).__name__}'
    )
  if output_of(factory) == SUM:
    raise ValueError(
        f'{argument}: {describe(factory)} yields the sum of the client updates, and a model '
        'aggregator must yield their mean (the model moves by it); pass agg.chain(<it>), '
        'which averages over the clients that took part, or a factory with a mean output '
        "(e.g. GaussianNoise(..., output='mean', expected_clients_per_round=N))"
    )
  if is_weighted(factory):
    return factory
  return IgnoringWeights(factory)


class IgnoringWeights(tff.aggregators.WeightedAggregationFactory):
  """A weighted factory that runs an unweighted one and drops the weights.

  What `tff.learning.algorithms.build_unweighted_fed_avg` does with its
  `model_aggregator`; the process's state and measurements are the inner's.
  """

  def __init__(self, unweighted_factory: tff.aggregators.UnweightedAggregationFactory):
    if not isinstance(unweighted_factory, tff.aggregators.UnweightedAggregationFactory):
      raise TypeError(f'unweighted_factory must be an UnweightedAggregationFactory, got {type(unweighted_factory).__name__}')
    self._factory = unweighted_factory

  @property
  def output(self) -> str:
    return output_of(self._factory)

  def __repr__(self) -> str:
    return f'IgnoringWeights({self._factory!r})'

  def create(self, value_type: tff.Type, weight_type: tff.Type) -> tff.templates.AggregationProcess:
    process = self._factory.create(value_type)

    @tff.federated_computation(
        process.state_type,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      del weight  # Uniform: every client counts once.
      return process.next(state, value)

    return tff.templates.AggregationProcess(process.initialize, next_fn)


def check_inner(stage: ComposableStage, inner_factory: Factory) -> None:
  """Raises unless `inner_factory` is of the kind and output that `stage` takes."""
  name = type(stage).__name__
  if stage.inner_kind is None:
    raise TypeError(f'{name} takes no inner factory')
  weighted = stage.inner_kind == WEIGHTED
  expected = tff.aggregators.WeightedAggregationFactory if weighted else tff.aggregators.UnweightedAggregationFactory
  if not isinstance(inner_factory, expected):
    raise TypeError(f'{name}: inner_factory must be a tff.aggregators.{expected.__name__}, got {type(inner_factory).__name__}')
  needed = stage.inner_output
  if needed is not None and output_of(inner_factory) != needed:
    raise ValueError(
        f'{name}: inner_factory must yield the {needed} of the client values, but '
        f'{describe(inner_factory)} yields their {output_of(inner_factory)}'
        + (" (give it output='sum')" if needed == SUM else '')
    )


class ComposableFactory:
  """Base for factories that take part in `chain`: the `ComposableStage` plumbing, once.

  Subclass it beside TFF's base, set `inner_kind` and `inner_output`, give the
  constructor an `inner_factory=None` argument (if it takes one) and `output`
  (a property, or a constructor argument of that name, which makes the output
  selectable by `with_output`), and implement `default_inner_factory()`.
  The constructor's arguments are recorded, so `replace(**changes)` builds a
  copy through the constructor again, with all its checks, and `__repr__`
  shows the arguments given.
  """

  inner_kind: ClassVar[Optional[str]] = None
  inner_output: ClassVar[Optional[str]] = None

  def __new__(cls, *args, **kwargs):
    instance = super().__new__(cls)
    try:
      bound = inspect.signature(cls.__init__).bind(instance, *args, **kwargs)
    except TypeError:
      instance._arguments = {}  # __init__ raises Python's own error for these arguments.
    else:
      instance._arguments = dict(list(bound.arguments.items())[1:])  # without self
    return instance

  def default_inner_factory(self) -> Optional[Factory]:
    """The inner factory used when the constructor is given none."""
    return None

  @property
  def inner_factory(self) -> Optional[Factory]:
    return self._arguments.get('inner_factory') or self.default_inner_factory()

  @property
  def output(self) -> str:
    """The constructor's `output` argument; else, for a stage that takes any
    inner factory (`inner_output = None`), the inner factory's output."""
    parameter = inspect.signature(type(self).__init__).parameters.get('output')
    if parameter is not None:
      return self._arguments.get('output', parameter.default)
    if self.inner_kind is not None and self.inner_output is None:
      return output_of(self.inner_factory)
    raise NotImplementedError(f'{type(self).__name__} must define output')

  def replace(self, **changes: Any) -> 'ComposableFactory':
    """A new factory built with the constructor's arguments updated by `changes`."""
    return type(self)(**{**self._arguments, **changes})

  def with_inner(self, inner_factory: Factory) -> 'ComposableFactory':
    if self.inner_kind is None:
      raise TypeError(f'{type(self).__name__} takes no inner factory')
    return self.replace(inner_factory=inner_factory)

  def with_output(self, output: str) -> 'ComposableFactory':
    """A copy yielding `output`: through the `output` argument, or, for a stage
    whose output follows its inner factory's, through the inner factory."""
    if output == self.output:
      return self
    if 'output' in inspect.signature(type(self).__init__).parameters:
      return self.replace(output=output)
    inner = self.inner_factory
    if self.inner_output is None and isinstance(inner, ComposableStage):
      return self.with_inner(inner.with_output(output))
    raise ValueError(f'{type(self).__name__} yields the {self.output} of the client values, never the {output}')

  def __repr__(self) -> str:
    arguments = ', '.join(f'{key}={value!r}' for key, value in self._arguments.items())
    return f'{type(self).__name__}({arguments})'
