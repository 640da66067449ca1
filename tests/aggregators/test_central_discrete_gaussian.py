"""CentralDiscreteGaussian: no floating-point leak, the noise it claims, and its accounting."""

import collections
import math

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff

from tests.aggregators.testing import BAD_VALUE_TYPE_IDS, BAD_VALUE_TYPES
from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import central_discrete_gaussian as cdg, privacy_accounting, privacy_check

SCALAR = tff.TensorType(np.float32)
STRUCT = tff.to_type(((np.float32, (2,)), np.float64))
VECTOR = tff.TensorType(np.float32, [3000])


@pytest.fixture(scope='module')
def scalar_sum():
  factory = cdg.CentralDiscreteGaussian(1.0, 1.0, output='sum')
  return factory, factory.create(SCALAR)


def test_is_an_unweighted_factory_with_named_state_and_measurements():
  process = cdg.CentralDiscreteGaussian(0.5, 1.0, output='sum', max_epsilon=10.0).create(STRUCT)
  assert not process.is_weighted
  state = tff.FederatedType(collections.OrderedDict(rounds=np.int64, sum_agg=()), tff.SERVER)
  measurements = collections.OrderedDict(
      sum=(), clip=np.float32, grid_step=np.float64, noise_stddev=np.float64, epsilon=np.float64,
      epsilon_against_server=np.float64, rounds=np.int64, budget_exhausted=np.bool_,
  )
  expected = tff.FunctionType(
      parameter=collections.OrderedDict(state=state, value=tff.FederatedType(STRUCT, tff.CLIENTS)),
      result=tff.templates.MeasuredProcessOutput(
          state, tff.FederatedType(STRUCT, tff.SERVER), tff.FederatedType(measurements, tff.SERVER)
      ),
  )
  assert process.next.type_signature.is_equivalent_to(expected)


def _released(process, value, rounds):
  state = process.initialize()
  return np.array([process.next(state, [value]).result for _ in range(rounds)], np.float32)


def test_released_values_are_on_the_grid_whatever_the_input(scalar_sum):
  """Mironov's distinguisher (is an output in (0, 0.5) off the grid?) answers the same for inputs 0 and 1.

  `GaussianNoise`'s float noise fails it: its outputs for one input sit on a finer
  float32 grid than for the other. Here every output is grid_step times an integer.
  """
  factory, process = scalar_sum
  scale = factory.calibrate(SCALAR).scale

  def off_grid(outputs):
    near = (outputs > 0) & (outputs < 0.5)
    on_grid = np.float32(np.round(outputs.astype(np.float64) * scale) / scale)
    return np.mean(outputs[near] != on_grid[near]), int(near.sum())

  for value in (0.0, 1.0):
    fraction, near = off_grid(_released(process, value, 100))
    assert near > 5 and fraction == 0.0
  gaussian = agg.GaussianNoise(1.0, 1.0, output='sum').create(SCALAR)
  float_grid = [np.mean((r[(r > 0) & (r < 0.5)].astype(np.float64) * 2**24) % 1 != 0)
                for r in (_released(gaussian, value, 100) for value in (0.0, 1.0))]
  assert abs(float_grid[0] - float_grid[1]) > 0.3  # the float mechanism's leak, for contrast


def test_noise_has_the_stated_spread_and_no_bias():
  factory = cdg.CentralDiscreteGaussian(0.7, 2.0, output='sum')
  process = factory.create(VECTOR)
  output = process.next(process.initialize(), [np.zeros(3000, np.float32)] * 5)
  calibration = factory.calibrate(VECTOR)
  assert output.measurements['noise_stddev'] == pytest.approx(calibration.noise_stddev)
  assert calibration.noise_stddev == pytest.approx(0.7 * 2.0, rel=1e-6)
  assert np.std(output.result) == pytest.approx(calibration.noise_stddev, rel=0.05)
  assert abs(np.mean(output.result)) < 5 * calibration.noise_stddev / math.sqrt(3000)


def test_without_noise_it_is_the_clipped_mean_up_to_the_grid():
  factory = cdg.CentralDiscreteGaussian(0.0, 5.0, expected_clients_per_round=3)
  process = factory.create(STRUCT)
  output = process.next(process.initialize(), [((3.0, 0.0), 4.0), ((1.0, 1.0), 0.0), ((np.nan, 0.0), 1.0)])
  step = factory.calibrate(STRUCT).grid_step
  np.testing.assert_allclose(output.result[0], [4.0 / 3, 1.0 / 3], atol=2 * step)  # the NaN client sends zeros
  assert output.result[1] == pytest.approx(4.0 / 3, abs=2 * step)
  assert output.measurements['epsilon'] == np.inf


def _gaussian_epsilon(event, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE):
  accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
  accountant.compose(event)
  return accountant.get_epsilon(1e-5)


def test_one_draw_without_sampling_is_accounted_as_the_gaussian():
  """One discrete Gaussian: the Gaussian's RDP at the rounded sensitivity (Canonne, Kamath and Steinke 2020)."""
  factory = cdg.CentralDiscreteGaussian(2.0, 1.0, output='sum')
  calibration = factory.calibrate(SCALAR)
  assert calibration.draws == 1
  z = math.sqrt(calibration.variance / calibration.l2_bound_squared)
  assert 1.99 < z <= 2.0
  expected = _gaussian_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 3))
  assert factory.epsilon_after(3, SCALAR) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('sampling', ['poisson', 'fixed_size'])
def test_amplification_is_a_little_looser_than_dp_accountings_gaussian(sampling):
  factory = cdg.CentralDiscreteGaussian(1.0, 1.0, expected_clients_per_round=10, population=1000, sampling=sampling)
  ours = factory.epsilon_after(20, VECTOR)
  gaussian = agg.GaussianNoise(1.0, 1.0, expected_clients_per_round=10, population=1000, sampling=sampling)
  assert gaussian.epsilon_after(20) <= ours <= 1.1 * gaussian.epsilon_after(20)
  assert factory.epsilon_after(20, VECTOR, against_server=True) > 3 * ours


def test_generic_amplification_bounds_hold_above_dp_accountings_for_the_gaussian():
  """The bounds for any RDP curve, given the Gaussian's, never undercut dp_accounting's Gaussian-specific ones."""
  integer = np.array([float(order).is_integer() for order in privacy_accounting.RDP_ORDERS])
  for sampling in (privacy_accounting.Sampling('poisson', 1000, 10), privacy_accounting.Sampling('fixed_size', 100, 30)):
    for z in (0.5, 1.0, 3.0):
      accounted = z / 2 if sampling.relation == privacy_accounting.REPLACE_ONE else z
      generic = privacy_accounting.amplified_rdp(lambda order, s=accounted: order / (2 * s**2), sampling)
      exact = privacy_accounting.rdp_per_round(z, sampling)
      assert np.all(generic[integer] >= exact[integer] * (1 - 1e-9))


def test_the_round_beyond_the_budget_is_not_run():
  unlimited = cdg.CentralDiscreteGaussian(1.0, 1.0, output='sum')
  factory = unlimited.replace(max_epsilon=(unlimited.epsilon_after(1, SCALAR) + unlimited.epsilon_after(2, SCALAR)) / 2)
  process = factory.create(SCALAR)
  state = process.initialize()
  for expected_release in (True, False):
    output = process.next(state, [0.5])
    state = output.state
    assert output.measurements['budget_exhausted'] == (not expected_release)
  assert output.result == 0.0 and output.measurements['noise_stddev'] == 0.0 and state['rounds'] == 1


def test_with_a_secure_integer_sum_only_secure_aggregations_reach_the_server():
  factory = cdg.CentralDiscreteGaussian(1.0, 1.0, output='sum')
  bound = math.isqrt(factory.calibrate(VECTOR).l2_bound_squared) + 1
  secure = factory.replace(integer_sum_factory=tff.aggregators.SecureSumFactory(bound, -bound))
  process = secure.create(VECTOR)
  tff.test.assert_not_contains_unsecure_aggregation(process.next)
  found = privacy_check.channels(process.next, [secure.noised_channel_type(VECTOR)], 'discrete')
  assert [c.value_type for c in found if c.covered_by_epsilon] == ['int64[3000]']
  assert all(c.secure for c in found)  # the rest: SecureSumFactory's counts of clipped clients
  output = process.next(process.initialize(), [np.full(3000, 0.001, np.float32)] * 2)
  assert np.all(np.isfinite(output.result))


@pytest.mark.parametrize('value_type', BAD_VALUE_TYPES, ids=BAD_VALUE_TYPE_IDS)
def test_bad_value_types_raise_at_create(value_type):
  with pytest.raises(TypeError):
    cdg.CentralDiscreteGaussian(1.0, 1.0, output='sum').create(value_type)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(noise_multiplier=-1.0), ValueError, 'noise_multiplier'),
        (dict(clip=0.0), ValueError, 'clip'),
        (dict(output='mean'), ValueError, 'expected_clients_per_round'),
        (dict(population=100), ValueError, 'expected_clients_per_round'),
        (dict(expected_clients_per_round=2, population=100, sampling='uniform'), ValueError, 'sampling'),
        (dict(expected_clients_per_round=2, population=1000, target_delta=1e-3), ValueError, '1/population'),
        (dict(max_epsilon=0), ValueError, 'max_epsilon'),
        (dict(beta=1.0), ValueError, 'beta'),
        (dict(integer_sum_factory=tff.aggregators.MeanFactory()), TypeError, 'integer_sum_factory'),
        (dict(integer_sum_factory=tff.aggregators.UnweightedMeanFactory()), ValueError, 'integer_sum_factory'),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    cdg.CentralDiscreteGaussian(**{**dict(noise_multiplier=1.0, clip=1.0, output='sum'), **kwargs})
