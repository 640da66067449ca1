"""The one rule (a model aggregator yields the mean, an inner sum the sum) and the chain protocol."""

import collections
import warnings

import numpy as np
import pytest
import tensorflow_federated as tff

from tests.aggregators.testing import ClipEachCoordinate, CountingMeanFactory, CountingSumFactory
from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import composition

VALUE = tff.TensorType(np.float32, [3])
WEIGHT = tff.TensorType(np.float32)
CLIENTS = 5
UPDATES = [np.ones(3, np.float32)] * CLIENTS  # every client's update is [1, 1, 1]


def _quiet_chain(*stages, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)  # the weight-sum DP note
    return agg.chain(*stages, **kwargs)


class DuckTypedMean(tff.aggregators.UnweightedAggregationFactory):
  """A user's factory that follows the protocol without our base class: mean of its sum inner."""

  inner_kind = composition.UNWEIGHTED
  inner_output = composition.SUM
  output = composition.MEAN

  def __init__(self, inner_factory=None):
    self.inner_factory = inner_factory or tff.aggregators.SumFactory()

  def with_inner(self, inner_factory):
    return DuckTypedMean(inner_factory)

  def with_output(self, output):
    if output != self.output:
      raise ValueError('DuckTypedMean only averages')
    return self

  def create(self, value_type):
    return tff.aggregators.UnweightedMeanFactory(value_sum_factory=self.inner_factory).create(value_type)


# (factory, weighted): the result of 5 clients sending [1, 1, 1] is [1, 1, 1] for a
# mean and [5, 5, 5] for a sum, and must be what `output_of` says.
FACTORIES = {
    'tff SumFactory': (tff.aggregators.SumFactory, False),
    'tff MeanFactory': (tff.aggregators.MeanFactory, True),
    'tff UnweightedMeanFactory': (tff.aggregators.UnweightedMeanFactory, False),
    'GaussianNoise default': (lambda: agg.GaussianNoise(0.0, 10.0, expected_clients_per_round=CLIENTS), False),
    "GaussianNoise output='sum'": (lambda: agg.GaussianNoise(0.0, 10.0, output='sum'), False),
    'SecureFixedPointSum': (lambda: agg.SecureFixedPointSum(4.0, bits=24), False),
    'ClusterQualityWeighting': (lambda: agg.ClusterQualityWeighting(2, sketch_dim=16), True),
    'user pass-through over a sum': (lambda: ClipEachCoordinate(2.0), False),
    'user duck-typed mean': (DuckTypedMean, False),
    'chain of sums': (lambda: agg.chain(agg.GaussianNoise(0.0, 10.0, output='sum'), agg.secure_integer_sum()), False),
    'chain, weighted': (
        lambda: _quiet_chain(
            agg.ClusterQualityWeighting(2, sketch_dim=16),
            agg.GaussianNoise(0.0, 10.0, expected_clients_per_round=CLIENTS),
            agg.secure_integer_sum(),
        ),
        True,
    ),
    'chain with a user stage': (
        lambda: _quiet_chain(agg.ClusterQualityWeighting(2, sketch_dim=16), ClipEachCoordinate(2.0), agg.SecureFixedPointSum(4.0, bits=24)),
        True,
    ),
}


@pytest.mark.parametrize('name', list(FACTORIES))
def test_every_factory_yields_what_output_of_says(name):
  make, weighted = FACTORIES[name]
  factory = make()
  process = factory.create(VALUE, WEIGHT) if weighted else factory.create(VALUE)
  state = process.initialize()
  for _ in range(2):  # the second round uses learned prototypes
    output = process.next(state, UPDATES, [1.0] * CLIENTS) if weighted else process.next(state, UPDATES)
    state = output.state
    expected = CLIENTS if agg.output_of(factory) == 'sum' else 1.0
    np.testing.assert_allclose(output.result, np.full(3, expected), rtol=1e-5)


@pytest.mark.parametrize('name', list(FACTORIES))
def test_as_model_aggregator_takes_every_mean_and_refuses_every_sum(name):
  factory = FACTORIES[name][0]()
  if agg.output_of(factory) == 'sum':
    with pytest.raises(ValueError, match=r'yields the sum of the client updates.*agg\.chain'):
      agg.as_model_aggregator(factory)
  else:
    assert isinstance(agg.as_model_aggregator(factory), tff.aggregators.WeightedAggregationFactory)


def test_chain_of_any_single_stage_yields_the_mean():
  for name, (make, _) in FACTORIES.items():
    factory = agg.chain(make())
    assert agg.output_of(factory) == 'mean', name


def test_the_issue_example_refuses_with_one_line():
  with pytest.raises(ValueError, match=r"output='mean' \(the default\).*expected_clients_per_round=N.*output='sum'") as error:
    agg.GaussianNoise(0.5, clip=1.0)
  assert '\n' not in str(error.value)


def test_an_unweighted_mean_as_model_aggregator_ignores_the_weights():
  factory = agg.as_model_aggregator(agg.GaussianNoise(0.0, 10.0, expected_clients_per_round=2))
  process = factory.create(VALUE, WEIGHT)
  output = process.next(process.initialize(), [np.ones(3, np.float32), 3 * np.ones(3, np.float32)], [1.0, 100.0])
  np.testing.assert_allclose(output.result, np.full(3, 2.0))
  assert 'epsilon' in output.measurements


def test_as_model_aggregator_names_the_argument():
  with pytest.raises(TypeError, match='model_aggregator must be'):
    agg.as_model_aggregator('mean', argument='model_aggregator')


def test_chain_makes_the_stage_after_a_weighted_one_a_sum():
  factory = _quiet_chain(
      agg.ClusterQualityWeighting(2), agg.GaussianNoise(0.0, 100.0, expected_clients_per_round=4),
      agg.secure_integer_sum(),
  )
  noise = factory.inner_factory  # MeanFactory(value_sum_factory=GaussianNoise(..., output='sum'))
  assert isinstance(noise, tff.aggregators.MeanFactory)
  process = factory.create(VALUE, WEIGHT)
  output = process.next(process.initialize(), [np.ones(3, np.float32), 3 * np.ones(3, np.float32)], [1.0, 3.0])
  np.testing.assert_allclose(output.result, np.full(3, 2.5), atol=1e-4)


def test_chain_converts_through_a_pass_through_user_stage():
  factory = _quiet_chain(
      agg.ClusterQualityWeighting(2), ClipEachCoordinate(2.0), agg.GaussianNoise(0.0, 10.0, expected_clients_per_round=4)
  )
  process = factory.create(VALUE, WEIGHT)
  output = process.next(process.initialize(), [np.ones(3, np.float32), 5 * np.ones(3, np.float32)], [1.0, 1.0])
  np.testing.assert_allclose(output.result, np.full(3, 1.5), atol=1e-5)  # 5 clipped to 2


@pytest.mark.parametrize(
    'stages, match',
    [
        # A stage that only yields a mean cannot be a weighted mean's value_sum_factory.
        ((agg.ClusterQualityWeighting(2), DuckTypedMean()), r'DuckTypedMean must yield the sum as the value_sum_factory.*stage 0.*only averages'),
        ((agg.ClusterQualityWeighting(2), tff.aggregators.UnweightedMeanFactory()), r'UnweightedMeanFactory yields the mean.*must yield the sum'),
        ((agg.GaussianNoise(0.0, 1.0, output='sum'), tff.aggregators.UnweightedMeanFactory()), r'inner factory of GaussianNoise'),
        ((agg.ClusterQualityWeighting(2), lambda inner: inner, DuckTypedMean()), r'DuckTypedMean must yield the sum'),
    ],
)
def test_chain_refuses_a_mean_where_a_sum_goes(stages, match):
  with pytest.raises(ValueError, match=match):
    _quiet_chain(*stages)


def test_replace_and_repr_go_through_the_constructor():
  noise = agg.GaussianNoise(0.5, clip=1.0, expected_clients_per_round=10)
  assert repr(noise) == 'GaussianNoise(noise_multiplier=0.5, clip=1.0, expected_clients_per_round=10)'
  assert repr(noise.replace(clip=2.0)) == 'GaussianNoise(noise_multiplier=0.5, clip=2.0, expected_clients_per_round=10)'
  with pytest.raises(ValueError, match='clip'):
    noise.replace(clip=-1.0)
  assert noise.with_output('sum').output == 'sum' and noise.output == 'mean'
  assert repr(ClipEachCoordinate(1.0)) == 'ClipEachCoordinate(limit=1.0)'


def test_with_inner_copies_and_checks():
  quality = agg.ClusterQualityWeighting(2)
  inner = CountingMeanFactory()
  rebuilt = quality.with_inner(inner)
  assert rebuilt.inner_factory is inner and type(quality.inner_factory) is tff.aggregators.MeanFactory
  with pytest.raises(TypeError, match='WeightedAggregationFactory'):
    quality.with_inner(tff.aggregators.SumFactory())
  with pytest.raises(TypeError, match='takes no inner factory'):
    agg.SecureFixedPointSum().with_inner(tff.aggregators.SumFactory())
  with pytest.raises(ValueError, match='never the mean'):
    agg.SecureFixedPointSum().with_output('mean')


def test_undeclared_factories_are_means_as_tff_takes_them():
  assert agg.output_of(CountingMeanFactory()) == 'mean'
  assert agg.output_of(CountingSumFactory()) == 'sum'  # it declares output = 'sum'
  assert agg.output_of(tff.aggregators.SecureSumFactory(1.0)) == 'sum'
  assert agg.output_of(tff.learning.robust_aggregator()) == 'mean'


def test_protocol_is_structural():
  assert isinstance(DuckTypedMean(), agg.ComposableStage)
  assert isinstance(agg.GaussianNoise(1.0, 1.0, output='sum'), agg.ComposableStage)
  assert not isinstance(tff.aggregators.MeanFactory(), agg.ComposableStage)


def test_duck_typed_user_stage_chains():
  factory = agg.chain(DuckTypedMean(), agg.SecureFixedPointSum(4.0, bits=24))
  process = factory.create(VALUE)
  output = process.next(process.initialize(), UPDATES)
  np.testing.assert_allclose(output.result, np.ones(3), rtol=1e-5)
  assert collections.OrderedDict(output.measurements)['mean_value']['secure_bound'] == 4.0
