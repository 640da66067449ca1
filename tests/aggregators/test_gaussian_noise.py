import collections
import warnings

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff

from tests.aggregators.testing import BAD_VALUE_TYPE_IDS, BAD_VALUE_TYPES, MEASUREMENT, CountingSumFactory
from tff_orchestra.aggregators import AdaptiveClip, GaussianNoise, Sampling, SecureFixedPointSum

SCALAR = tff.TensorType(np.float32)
STRUCT = tff.to_type(((np.float32, (2,)), np.float64))
VECTOR = tff.TensorType(np.float32, [4000])


def _state_type(inner=(), statistics=()):
  return collections.OrderedDict(clip=np.float32, rounds=np.int64, inner_agg=inner, statistics_agg=statistics)


@pytest.fixture(scope='module')
def population_process():
  factory = GaussianNoise(
      1.0, 1.0, expected_clients_per_round=3, population=100, target_delta=1e-5, max_epsilon=1.4
  )
  return factory, factory.create(SCALAR)


@pytest.fixture(scope='module')
def struct_process():
  return GaussianNoise(0.0, 1.0, output='sum').create(STRUCT)


def test_is_unweighted(struct_process):
  assert isinstance(GaussianNoise(1.0, 1.0, output='sum'), tff.aggregators.UnweightedAggregationFactory)
  assert not struct_process.is_weighted


@pytest.mark.parametrize('value_type', [SCALAR, STRUCT], ids=['scalar', 'struct'])
def test_type_signature(value_type):
  process = GaussianNoise(0.5, 1.0, output='sum').create(value_type)
  state = tff.FederatedType(_state_type(), tff.SERVER)
  measurements = collections.OrderedDict(
      dp=(), clip=np.float32, noise_stddev=np.float32, clipped_fraction=np.float32, non_finite_clients=np.int64,
      epsilon=np.float64, epsilon_against_server=np.float64, rounds=np.int64, statistics=(),
  )
  expected = tff.FunctionType(
      parameter=collections.OrderedDict(state=state, value=tff.FederatedType(value_type, tff.CLIENTS)),
      result=tff.templates.MeasuredProcessOutput(
          state, tff.FederatedType(value_type, tff.SERVER), tff.FederatedType(measurements, tff.SERVER)
      ),
  )
  assert process.next.type_signature.is_equivalent_to(expected)
  assert process.initialize.type_signature.is_equivalent_to(tff.FunctionType(None, state))


def test_clips_each_client_to_the_norm_without_noise(struct_process):
  state = struct_process.initialize()
  # Norms 5 (clipped to 1: scaled by 1/5), 0.5 (kept) and 0 (kept, no NaN).
  values = [((3.0, 0.0), 4.0), ((0.3, 0.4), 0.0), ((0.0, 0.0), 0.0)]
  for round_num in range(1, 3):
    output = struct_process.next(state, values)
    state = output.state
    np.testing.assert_allclose(output.result[0], [0.6 + 0.3, 0.4], rtol=1e-6)
    assert output.result[1] == pytest.approx(0.8)
    assert output.measurements['clipped_fraction'] == pytest.approx(1 / 3)
    assert output.measurements['noise_stddev'] == 0.0
    assert output.measurements['epsilon'] == np.inf
    assert output.measurements['rounds'] == round_num


def test_epsilon_matches_dp_accounting_every_round_and_the_round_beyond_the_budget_is_withheld(population_process):
  factory, process = population_process
  state = process.initialize()
  for rounds in range(1, 3):
    output = process.next(state, [1.0, 0.5, 3.0])
    state = output.state
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.03, dp_accounting.GaussianDpEvent(1.0)), rounds
    )
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    expected = accountant.get_epsilon(1e-5)
    assert output.measurements['epsilon'] == pytest.approx(expected, rel=1e-9)
    assert not output.measurements['budget_exhausted'] and output.measurements['noise_stddev'] == 1.0
    assert factory.dp_event(state) == event
    assert factory.epsilon(state) == pytest.approx(expected, rel=1e-12)
    server = factory.epsilon(state, against_server=True)
    assert output.measurements['epsilon_against_server'] == pytest.approx(server, rel=1e-9)
    assert server == pytest.approx(
        _rdp_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), rounds)), rel=1e-12
    )
  # A 3rd round would spend 1.438 > max_epsilon 1.4: it is not run, nothing is released or charged.
  for _ in range(2):
    output = process.next(state, [1.0, 0.5, 3.0])
    state = output.state
    assert output.measurements['budget_exhausted']
    assert output.result == 0.0 and output.measurements['noise_stddev'] == 0.0
    assert output.measurements['clipped_fraction'] == 0.0 and output.measurements['rounds'] == 2
    assert output.measurements['epsilon'] == pytest.approx(factory.epsilon(state), rel=1e-9)
    assert output.measurements['epsilon'] < 1.4


def _rdp_epsilon(event, delta=1e-5, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE):
  accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
  accountant.compose(event)
  return accountant.get_epsilon(delta)


def test_fixed_size_sampling_is_accounted_under_replace_one():
  factory = GaussianNoise(
      1.0, 1.0, expected_clients_per_round=3, population=100, sampling='fixed_size',
      output='sum',
  )
  assert factory.sampling == Sampling('fixed_size', 100, 3)
  process = factory.create(SCALAR)
  state = process.initialize()
  for _ in range(2):
    output = process.next(state, [1.0, 0.5, 3.0])
    state = output.state
  replace_one = dp_accounting.NeighboringRelation.REPLACE_ONE
  wor = dp_accounting.SampledWithoutReplacementDpEvent(100, 3, dp_accounting.GaussianDpEvent(0.5))
  assert output.measurements['epsilon'] == pytest.approx(
      _rdp_epsilon(dp_accounting.SelfComposedDpEvent(wor, 2), relation=replace_one), rel=1e-9
  )
  assert output.measurements['epsilon_against_server'] == pytest.approx(
      _rdp_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(0.5), 2), relation=replace_one),
      rel=1e-9,
  )


def test_a_withheld_round_sends_nothing_from_the_clients():
  # max_epsilon below one round: nothing leaves a client, so the secure sums see zeros only.
  factory = GaussianNoise(
      1.0, 1.0, expected_clients_per_round=2, max_epsilon=0.5, output='sum',
      inner_factory=SecureFixedPointSum(4.0), statistics_sum_factory=SecureFixedPointSum(4.0),
  )
  process = factory.create(SCALAR)
  output = process.next(process.initialize(), [3.0, 0.5])
  assert output.measurements['budget_exhausted'] and output.measurements['epsilon'] == 0.0
  # Zeros, summed as fixed-point with unbiased rounding: within a quantisation step per client of 0.
  assert abs(output.result) <= 2 * output.measurements['dp']['secure_quantization_step']
  assert output.measurements['dp']['secure_clipped_count'] == 0
  assert output.state['rounds'] == 0


def test_epsilon_without_sampling_is_plain_gaussian_composition():
  process = GaussianNoise(2.0, 1.0, target_delta=1e-6, output='sum').create(SCALAR)
  state = process.initialize()
  for _ in range(3):
    output = process.next(state, [0.5])
    state = output.state
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 3))
  assert output.measurements['epsilon'] == pytest.approx(accountant.get_epsilon(1e-6), rel=1e-9)


def test_noise_has_the_configured_spread():
  """Sum of 10 zero vectors: every coordinate is pure noise of std z * clip."""
  noise_multiplier, clip, clients = 0.7, 2.0, 10
  process = GaussianNoise(noise_multiplier, clip, expected_clients_per_round=clients, output='sum').create(VECTOR)
  output = process.next(process.initialize(), [np.zeros(4000, np.float32)] * clients)
  expected_std = noise_multiplier * clip
  assert output.measurements['noise_stddev'] == pytest.approx(expected_std)
  sample = np.asarray(output.result)
  # 4000 draws: the sample std is within 5% of the truth with overwhelming probability.
  assert np.std(sample) == pytest.approx(expected_std, rel=0.05)
  assert abs(np.mean(sample)) < 4 * expected_std / np.sqrt(4000)


def test_output_mean_divides_by_expected_clients():
  process = GaussianNoise(0.0, 10.0, expected_clients_per_round=4, output='mean').create(SCALAR)
  output = process.next(process.initialize(), [1.0, 2.0, 3.0, 6.0])
  assert output.result == pytest.approx(3.0)


def test_adaptive_clip_moves_towards_the_target_quantile():
  clip = AdaptiveClip(initial_clip=1.0, target_quantile=0.5, learning_rate=0.5)
  process = GaussianNoise(0.0, clip, expected_clients_per_round=4).create(SCALAR)
  state = process.initialize()
  clips = []
  for _ in range(5):
    output = process.next(state, [5.0, 6.0, 7.0, 8.0])  # all norms above the clip
    state = output.state
    clips.append(output.measurements['clip'])
  assert clips[0] == 1.0
  assert all(b > a for a, b in zip(clips, clips[1:]))
  # All below the clip would shrink it: fraction 1 > 0.5.
  output = process.next(state, [0.0, 0.0, 0.0, 0.0])
  assert output.state['clip'] < output.measurements['clip']


def test_delegates_to_inner_and_statistics_factories():
  factory = GaussianNoise(
      0.0, 10.0, output='sum', inner_factory=CountingSumFactory(), statistics_sum_factory=CountingSumFactory()
  )
  process = factory.create(SCALAR)
  state = process.initialize()
  assert state['inner_agg'] == 0 and state['statistics_agg'] == 0
  for round_num in range(1, 4):
    output = process.next(state, [1.0, 2.0])
    state = output.state
    assert output.result == pytest.approx(3.0)
    assert state['inner_agg'] == round_num and state['statistics_agg'] == round_num
    assert output.measurements['dp'] == collections.OrderedDict(counted=MEASUREMENT)
    assert output.measurements['statistics'] == collections.OrderedDict(counted=MEASUREMENT)


def test_with_secure_sums_it_has_no_unsecure_aggregation():
  factory = GaussianNoise(
      0.5,
      AdaptiveClip(1.0, clipped_count_stddev=1.0),
      expected_clients_per_round=4,
      inner_factory=SecureFixedPointSum(4.0),
      statistics_sum_factory=SecureFixedPointSum(4.0),
  )
  process = factory.create(STRUCT)
  tff.test.assert_not_contains_unsecure_aggregation(process.next)
  output = process.next(process.initialize(), [((0.1, 0.2), 0.3)] * 4)
  assert np.all(np.isfinite(output.result[0])) and np.isfinite(output.result[1])
  assert output.measurements['dp']['secure_bound'] == 4.0


@pytest.mark.parametrize(
    'args, kwargs, error, match',
    [
        ((-1.0, 1.0), {}, ValueError, 'noise_multiplier'),
        (('1', 1.0), {}, TypeError, 'noise_multiplier'),
        ((1.0, 0.0), {}, ValueError, 'clip'),
        ((1.0, 1.0), dict(placement='local'), ValueError, 'placement'),
        ((1.0, 1.0), dict(placement='distributed'), ValueError, 'use DistributedDiscreteGaussian'),
        ((1.0, 1.0), dict(output='mean'), ValueError, 'expected_clients_per_round'),
        ((1.0, 1.0), dict(population=100), ValueError, 'expected_clients_per_round'),
        ((1.0, 1.0), dict(expected_clients_per_round=10, population=5), ValueError, 'population'),
        ((1.0, 1.0), dict(target_delta=1.0), ValueError, 'target_delta'),
        ((1.0, 1.0), dict(expected_clients_per_round=2, population=1000, target_delta=1e-3), ValueError,
         r'target_delta \(0.001\) must be below 1/population \(0.001\)'),
        ((1.0, 1.0), dict(expected_clients_per_round=2, population=10, sampling='uniform'), ValueError, 'sampling'),
        ((1.0, 1.0), dict(max_epsilon=0), ValueError, 'max_epsilon'),
        ((1.0, 1.0), dict(output='median'), ValueError, 'output'),
        ((1.0, AdaptiveClip()), {}, ValueError, 'expected_clients_per_round'),
        ((1.0, AdaptiveClip()), dict(expected_clients_per_round=10), ValueError, 'clipped_count_stddev'),
        ((1.0, 1.0), dict(inner_factory=tff.aggregators.MeanFactory()), TypeError, 'inner_factory'),
        ((1.0, 1.0), dict(statistics_sum_factory=3), TypeError, 'statistics_sum_factory'),
    ],
)
def test_bad_constructor_arguments(args, kwargs, error, match):
  with pytest.raises(error, match=match):
    GaussianNoise(*args, **{'output': 'sum', **kwargs})


def test_bad_adaptive_clip_arguments():
  with pytest.raises(ValueError, match='target_quantile'):
    AdaptiveClip(target_quantile=1.5)
  with pytest.raises(ValueError, match='initial_clip'):
    AdaptiveClip(initial_clip=0.0)


@pytest.mark.parametrize('value_type', BAD_VALUE_TYPES, ids=BAD_VALUE_TYPE_IDS)
def test_bad_value_type_raises_type_error(value_type):
  with pytest.raises(TypeError, match='value_type'):
    GaussianNoise(1.0, 1.0, output='sum').create(value_type)


def test_noise_that_swamps_any_signal_warns_at_create():
  big = tff.TensorType(np.float32, [10_000])
  with pytest.warns(UserWarning, match=r'the noise has about 50 times the norm of the largest possible signal'):
    GaussianNoise(1.0, clip=1.0, expected_clients_per_round=2).create(big)
  with warnings.catch_warnings():
    warnings.simplefilter('error', UserWarning)
    GaussianNoise(0.01, clip=1.0, expected_clients_per_round=2).create(big)  # ratio 0.5: no warning
