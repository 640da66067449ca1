"""GaussianNoise: clipping, the integer grid (no floating-point leak), the noise it claims, and its accounting."""

import collections
import math
import warnings

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff

from tests.aggregators.testing import BAD_VALUE_TYPE_IDS, BAD_VALUE_TYPES, MEASUREMENT, CountingSumFactory
from tff_orchestra.aggregators import AdaptiveClip, GaussianNoise, Sampling, SecureFixedPointSum, secure_integer_sum
from tff_orchestra.aggregators import privacy_accounting, privacy_check

SCALAR = tff.TensorType(np.float32)
STRUCT = tff.to_type(((np.float32, (2,)), np.float64))
VECTOR = tff.TensorType(np.float32, [3000])
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


def _state_type(statistics=True):
  state = collections.OrderedDict(clip=np.float32, rounds=np.int64, inner_agg=())
  if statistics:
    state['statistics_agg'] = ()
  return state


@pytest.fixture(scope='module')
def population_process():
  factory = GaussianNoise(
      1.0, 1.0, expected_clients_per_round=3, population=100, target_delta=1e-5, max_epsilon=1.54
  )
  return factory, factory.create(SCALAR)


@pytest.fixture(scope='module')
def struct_process():
  factory = GaussianNoise(0.0, 1.0, output='sum')
  return factory, factory.create(STRUCT)


@pytest.fixture(scope='module')
def scalar_sum():
  factory = GaussianNoise(1.0, 1.0, output='sum')
  return factory, factory.create(SCALAR)


def test_is_unweighted(struct_process):
  assert isinstance(GaussianNoise(1.0, 1.0, output='sum'), tff.aggregators.UnweightedAggregationFactory)
  assert not struct_process[1].is_weighted


@pytest.mark.parametrize('value_type', [SCALAR, STRUCT], ids=['scalar', 'struct'])
@pytest.mark.parametrize('report_clipping', [True, False], ids=['statistics', 'no-statistics'])
def test_type_signature(value_type, report_clipping):
  process = GaussianNoise(0.5, 1.0, output='sum', report_clipping=report_clipping, max_epsilon=50.0).create(value_type)
  state = tff.FederatedType(_state_type(report_clipping), tff.SERVER)
  measurements = collections.OrderedDict(dp=(), clip=np.float32, grid_step=np.float64, noise_stddev=np.float64)
  if report_clipping:
    measurements.update(clipped_fraction=np.float32, non_finite_clients=np.int64)
  measurements.update(epsilon=np.float64, epsilon_against_server=np.float64, rounds=np.int64)
  if report_clipping:
    measurements['statistics'] = ()
  measurements['budget_exhausted'] = np.bool_
  expected = tff.FunctionType(
      parameter=collections.OrderedDict(state=state, value=tff.FederatedType(value_type, tff.CLIENTS)),
      result=tff.templates.MeasuredProcessOutput(
          state, tff.FederatedType(value_type, tff.SERVER), tff.FederatedType(measurements, tff.SERVER)
      ),
  )
  assert process.next.type_signature.is_equivalent_to(expected)
  assert process.initialize.type_signature.is_equivalent_to(tff.FunctionType(None, state))


def test_clips_each_client_to_the_norm_without_noise_up_to_the_grid(struct_process):
  factory, process = struct_process
  state = process.initialize()
  step = factory.calibrate(STRUCT).clip_steps ** -1  # clip 1
  # Norms 5 (clipped to 1: scaled by 1/5), 0.5 (kept), 0 and a NaN (sent as zeros, counted).
  values = [((3.0, 0.0), 4.0), ((0.3, 0.4), 0.0), ((0.0, 0.0), 0.0), ((np.nan, 0.0), 1.0)]
  for round_num in range(1, 3):
    output = process.next(state, values)
    state = output.state
    np.testing.assert_allclose(output.result[0], [0.6 + 0.3, 0.4], atol=3 * step)
    assert output.result[1] == pytest.approx(0.8, abs=3 * step)
    assert output.measurements['grid_step'] == pytest.approx(step)
    assert output.measurements['clipped_fraction'] == pytest.approx(1 / 4)
    assert output.measurements['non_finite_clients'] == 1
    assert output.measurements['noise_stddev'] == 0.0
    assert output.measurements['epsilon'] == np.inf
    assert output.measurements['rounds'] == round_num


def _released(process, value, rounds):
  state = process.initialize()
  return np.array([process.next(state, [value]).result for _ in range(rounds)], np.float32)


def test_released_values_are_on_the_grid_whatever_the_input(scalar_sum):
  """Mironov's distinguisher (is an output in (0, 0.5) off a grid?) answers the same for inputs 0 and 1.

  TFF's float `gaussian_fixed` fails it: its outputs for one input sit on a
  finer float32 grid than for the other. Here every output is grid_step times an integer.
  """
  factory, process = scalar_sum
  clip_steps = factory.calibrate(SCALAR).clip_steps

  def off_grid(outputs):
    near = (outputs > 0) & (outputs < 0.5)
    on_grid = np.float32(np.round(outputs.astype(np.float64) * clip_steps) / clip_steps)
    return np.mean(outputs[near] != on_grid[near]), int(near.sum())

  for value in (0.0, 1.0):
    fraction, near = off_grid(_released(process, value, 100))
    assert near > 5 and fraction == 0.0
  tff_float = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(1.0, 1, 1.0).create(SCALAR)
  float_grid = [np.mean((r[(r > 0) & (r < 0.5)].astype(np.float64) * 2**24) % 1 != 0)
                for r in (_released(tff_float, value, 100) for value in (0.0, 1.0))]
  assert abs(float_grid[0] - float_grid[1]) > 0.3  # the float mechanism's leak, for contrast


def test_noise_has_the_stated_spread_and_no_bias():
  factory = GaussianNoise(0.7, 2.0, output='sum')
  process = factory.create(VECTOR)
  output = process.next(process.initialize(), [np.zeros(3000, np.float32)] * 5)
  calibration = factory.calibrate(VECTOR)
  assert output.measurements['noise_stddev'] == pytest.approx(calibration.noise_steps * 2.0 / calibration.clip_steps)
  assert output.measurements['noise_stddev'] == pytest.approx(0.7 * 2.0, rel=1e-6)
  assert np.std(output.result) == pytest.approx(0.7 * 2.0, rel=0.05)
  assert abs(np.mean(output.result)) < 5 * 0.7 * 2.0 / math.sqrt(3000)


def _gaussian_epsilon(event, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE):
  accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
  accountant.compose(event)
  return accountant.get_epsilon(1e-5)


def test_one_draw_without_sampling_is_accounted_as_the_gaussian_at_the_rounded_sensitivity():
  """One discrete Gaussian: the Gaussian's RDP (Canonne, Kamath and Steinke 2020), at the rounded vectors' norm bound."""
  factory = GaussianNoise(2.0, 1.0, output='sum')
  calibration = factory.calibrate(SCALAR)
  assert calibration.draws == 1
  z = math.sqrt(calibration.variance / calibration.l2_bound_squared)
  assert 1.99 < z <= 2.0
  expected = _gaussian_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 3))
  assert factory.epsilon_after(3, SCALAR) == pytest.approx(expected, rel=1e-9)


def test_measured_epsilon_is_the_accounted_one_and_the_round_beyond_the_budget_is_withheld(population_process):
  factory, process = population_process
  state = process.initialize()
  for rounds in range(1, 3):
    output = process.next(state, [1.0, 0.5, 3.0])
    state = output.state
    assert output.measurements['epsilon'] == pytest.approx(factory.epsilon_after(rounds, SCALAR), rel=1e-9)
    assert output.measurements['epsilon_against_server'] == pytest.approx(
        factory.epsilon_after(rounds, SCALAR, against_server=True), rel=1e-9
    )
    assert not output.measurements['budget_exhausted'] and output.measurements['noise_stddev'] == 1.0
  # A 3rd round would spend 1.56 > max_epsilon 1.54: it is not run, nothing is released or charged.
  assert factory.epsilon_after(3, SCALAR) > 1.54
  for _ in range(2):
    output = process.next(state, [1.0, 0.5, 3.0])
    state = output.state
    assert output.measurements['budget_exhausted']
    assert output.result == 0.0 and output.measurements['noise_stddev'] == 0.0
    assert output.measurements['clipped_fraction'] == 0.0 and output.measurements['rounds'] == 2
    assert output.measurements['epsilon'] == pytest.approx(factory.epsilon_after(2, SCALAR), rel=1e-9)


@pytest.mark.parametrize('sampling', ['poisson', 'fixed_size'])
def test_amplification_is_a_little_looser_than_dp_accountings_for_the_real_gaussian(sampling):
  factory = GaussianNoise(1.0, 1.0, expected_clients_per_round=10, population=1000, sampling=sampling)
  assert factory.sampling == Sampling(sampling, 1000, 10)
  ours = factory.epsilon_after(20, VECTOR)
  real_gaussian = privacy_accounting.epsilon_python(1.0, factory.sampling, 20, 1e-5)
  assert real_gaussian <= ours <= 1.1 * real_gaussian
  assert factory.epsilon_after(20, VECTOR, against_server=True) > 3 * ours


def test_fixed_size_sampling_is_accounted_under_replace_one_with_twice_the_sensitivity():
  factory = GaussianNoise(2.0, 1.0, expected_clients_per_round=3, population=100, sampling='fixed_size', output='sum')
  calibration = factory.calibrate(SCALAR)
  z = math.sqrt(calibration.variance / calibration.l2_bound_squared) / 2
  server = _gaussian_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 2), REPLACE_ONE)
  assert factory.epsilon_after(2, SCALAR, against_server=True) == pytest.approx(server, rel=1e-9)
  wor = dp_accounting.SampledWithoutReplacementDpEvent(100, 3, dp_accounting.GaussianDpEvent(z))
  assert factory.epsilon_after(2, SCALAR) >= _gaussian_epsilon(dp_accounting.SelfComposedDpEvent(wor, 2), REPLACE_ONE)


def test_generic_amplification_bounds_hold_above_dp_accountings_for_the_gaussian():
  """The bounds for any RDP curve, given the Gaussian's, never undercut dp_accounting's Gaussian-specific ones."""
  integer = np.array([float(order).is_integer() for order in privacy_accounting.RDP_ORDERS])
  for sampling in (Sampling('poisson', 1000, 10), Sampling('fixed_size', 100, 30)):
    for z in (0.5, 1.0, 3.0):
      accounted = z / 2 if sampling.relation == privacy_accounting.REPLACE_ONE else z
      generic = privacy_accounting.amplified_rdp(lambda order, s=accounted: order / (2 * s**2), sampling)
      exact = privacy_accounting.rdp_per_round(z, sampling)
      assert np.all(generic[integer] >= exact[integer] * (1 - 1e-9))


@pytest.mark.parametrize('sampling', ['poisson', 'fixed_size'])
def test_tiny_noise_multipliers_give_a_finite_epsilon_not_an_overflow(sampling):
  # RDP in the millions at order 2: the amplification bounds work in log space.
  factory = GaussianNoise(0.001, 2.0, expected_clients_per_round=10, population=50, sampling=sampling, target_delta=1e-5)
  epsilon = factory.epsilon_after(61, VECTOR)
  assert np.isfinite(epsilon) and epsilon > factory.epsilon_after(1, VECTOR) > 1e5


def test_adaptive_clipping_accounts_the_count_and_spends_what_a_fixed_clip_of_the_same_total_does():
  adaptive = GaussianNoise(1.0, AdaptiveClip(clipped_count_stddev=1.5), expected_clients_per_round=30, output='sum')
  calibration = adaptive.calibrate(VECTOR)
  assert calibration.count_step > 0 and calibration.channel_size == 3001
  value_only = privacy_accounting.discrete_gaussian_sum_rdp(
      [8.0], math.sqrt(calibration.l2_bound_squared), calibration.variance, calibration.draws, 3000)[0]
  count_only = 8.0 * calibration.count_step**2 / (2 * calibration.count_variance)
  assert adaptive.rdp_curve(VECTOR)(8.0) == pytest.approx(value_only + count_only, rel=1e-12)
  fixed = GaussianNoise(1.0, 1.0, output='sum')
  assert adaptive.epsilon_after(5, VECTOR) == pytest.approx(fixed.epsilon_after(5, VECTOR), rel=0.01)


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


def test_output_mean_divides_by_expected_clients():
  factory = GaussianNoise(0.0, 10.0, expected_clients_per_round=4, output='mean')
  output = factory.create(SCALAR).next(factory.create(SCALAR).initialize(), [1.0, 2.0, 3.0, 6.0])
  assert output.result == pytest.approx(3.0, abs=10.0 / factory.calibrate(SCALAR).clip_steps)


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
    assert output.result == pytest.approx(3.0, abs=0.01)
    assert state['inner_agg'] == round_num and state['statistics_agg'] == round_num
    assert output.measurements['dp'] == collections.OrderedDict(counted=MEASUREMENT)
    assert output.measurements['statistics'] == collections.OrderedDict(counted=MEASUREMENT)


def test_a_withheld_round_sends_nothing_from_the_clients():
  # max_epsilon below one round: nothing leaves a client, so the secure sums see zeros only.
  unlimited = GaussianNoise(1.0, 1.0, expected_clients_per_round=2, output='sum')
  factory = unlimited.replace(
      max_epsilon=0.5, inner_factory=secure_integer_sum(), statistics_sum_factory=SecureFixedPointSum(4.0)
  )
  process = factory.create(SCALAR)
  output = process.next(process.initialize(), [3.0, 0.5])
  assert output.measurements['budget_exhausted'] and output.measurements['epsilon'] == 0.0
  assert output.result == 0.0
  assert output.measurements['dp']['secure_upper_clipped_count'] == 0
  assert output.state['rounds'] == 0


def test_with_secure_sums_only_secure_aggregations_reach_the_server_and_epsilon_covers_the_integers():
  unlimited = GaussianNoise(0.5, AdaptiveClip(1.0, clipped_count_stddev=1.0), expected_clients_per_round=4)
  factory = unlimited.replace(inner_factory=secure_integer_sum(),
                              statistics_sum_factory=SecureFixedPointSum(4.0))
  process = factory.create(STRUCT)
  tff.test.assert_not_contains_unsecure_aggregation(process.next)
  found = privacy_check.channels(process.next, [factory.noised_channel_type(STRUCT)], 'discrete')
  assert [c.value_type for c in found if c.covered_by_epsilon] == ['int64[4]']  # 3 values and the count
  assert all(c.secure for c in found)
  output = process.next(process.initialize(), [((0.1, 0.2), 0.3)] * 4)
  assert np.all(np.isfinite(output.result[0])) and np.isfinite(output.result[1])


def test_an_inner_factory_that_cannot_sum_integers_is_named():
  with pytest.raises(TypeError, match=r'must sum the clients\' integer vectors \(int64\[1\]\)'):
    GaussianNoise(1.0, 1.0, output='sum', inner_factory=SecureFixedPointSum(4.0)).create(SCALAR)


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
        ((1.0, 1.0), dict(beta=1.0), ValueError, 'beta'),
        ((1.0, 1.0), dict(report_clipping='yes'), TypeError, 'report_clipping'),
        ((1.0, 1.0), dict(output='median'), ValueError, 'output'),
        ((1.0, AdaptiveClip()), {}, ValueError, 'expected_clients_per_round'),
        ((1.0, AdaptiveClip()), dict(expected_clients_per_round=10), ValueError, 'clipped_count_stddev'),
        ((1.0, 1.0), dict(inner_factory=tff.aggregators.MeanFactory()), TypeError, 'inner_factory'),
        ((1.0, 1.0), dict(inner_factory=tff.aggregators.UnweightedMeanFactory()), ValueError, 'inner_factory'),
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
