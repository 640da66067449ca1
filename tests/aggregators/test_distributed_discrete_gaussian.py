"""DistributedDiscreteGaussian: the mechanism run, what reaches the server, and its accounting."""

import collections
import math

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregators.testing import BAD_VALUE_TYPE_IDS, BAD_VALUE_TYPES
from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import discrete_gaussian, distributed_discrete_gaussian as ddg, privacy_check

STRUCT = tff.to_type(((np.float32, (2,)), np.float64))
VECTOR = tff.TensorType(np.float32, [3000])


@pytest.fixture(scope='module')
def struct_process():
  factory = ddg.DistributedDiscreteGaussian(0.0, 10.0, expected_clients_per_round=3)
  return factory, factory.create(STRUCT)


def test_is_an_unweighted_factory_whose_next_has_named_state_and_measurements(struct_process):
  factory, process = struct_process
  assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory) and not process.is_weighted
  state = tff.FederatedType(collections.OrderedDict(rounds=np.int64), tff.SERVER)
  measurements = collections.OrderedDict(
      clip=np.float32, grid_step=np.float64, noise_stddev=np.float64, participants=np.int64, released=np.bool_,
      epsilon=np.float64, rounds=np.int64,
  )
  expected = tff.FunctionType(
      parameter=collections.OrderedDict(state=state, value=tff.FederatedType(STRUCT, tff.CLIENTS)),
      result=tff.templates.MeasuredProcessOutput(
          state, tff.FederatedType(STRUCT, tff.SERVER), tff.FederatedType(measurements, tff.SERVER)
      ),
  )
  assert process.next.type_signature.is_equivalent_to(expected)


def test_only_the_modular_sum_and_the_count_reach_the_server(struct_process):
  factory, process = struct_process
  tff.test.assert_not_contains_unsecure_aggregation(process.next)
  found = privacy_check.channels(process.next, [factory.noised_channel_type(STRUCT)], 'distributed')
  assert [(c.intrinsic, c.value_type, c.covered_by_epsilon) for c in found] == [
      ('federated_secure_modular_sum', 'int64[4]', True), ('federated_secure_sum_bitwidth', 'int64', False)
  ]


def test_without_noise_it_returns_the_mean_up_to_the_grid(struct_process):
  _, process = struct_process
  values = [((1.0, -2.0), 0.5), ((0.0, 1.0), 0.25), ((3.0, 0.0), -1.0)]
  output = process.next(process.initialize(), values)
  step = output.measurements['grid_step']
  np.testing.assert_allclose(output.result[0], [4.0 / 3, -1.0 / 3], atol=4 * step)
  assert output.result[1] == pytest.approx(-0.25 / 3, abs=4 * step)
  assert output.measurements['epsilon'] == np.inf and output.measurements['participants'] == 3


def test_a_non_finite_value_is_sent_as_zeros(struct_process):
  _, process = struct_process
  output = process.next(process.initialize(), [((np.nan, 1.0), 0.0), ((0.0, 2.0), 3.0), ((0.0, 1.0), 0.0)])
  assert np.all(np.isfinite(output.result[0]))
  np.testing.assert_allclose(output.result[0], [0.0, 1.0], atol=1e-3)


def test_values_are_clipped_to_the_l2_norm():
  process = ddg.DistributedDiscreteGaussian(0.0, 1.0, expected_clients_per_round=1, output='sum').create(STRUCT)
  output = process.next(process.initialize(), [((3.0, 0.0), 4.0)])
  np.testing.assert_allclose(output.result[0], [0.6, 0.0], atol=1e-3)
  assert output.result[1] == pytest.approx(0.8, abs=1e-3)


def test_noise_is_that_of_every_participant_and_accounted_at_the_honest_minimum():
  """10 clients send zeros, min_clients 5: the sum carries sqrt(10/5) times the noise accounted."""
  factory = ddg.DistributedDiscreteGaussian(0.7, 2.0, expected_clients_per_round=10, min_clients=5, output='sum')
  process = factory.create(VECTOR)
  output = process.next(process.initialize(), [np.zeros(3000, np.float32)] * 10)
  calibration = factory.calibrate(VECTOR)
  accounted = math.sqrt(5 * calibration.variance) * calibration.grid_step
  assert output.measurements['noise_stddev'] == pytest.approx(accounted)
  assert accounted == pytest.approx(0.7 * 2.0, rel=1e-3)  # the variance is rounded up to whole grid steps
  assert np.std(output.result) == pytest.approx(math.sqrt(2.0) * accounted, rel=0.05)
  assert abs(np.mean(output.result)) < 5 * math.sqrt(2.0) * accounted / math.sqrt(3000)


def test_rotation_and_rounding_keep_the_mean_unbiased():
  factory = ddg.DistributedDiscreteGaussian(0.0, 100.0, expected_clients_per_round=2, bits=12)
  process = factory.create(VECTOR)
  values = [np.linspace(-1.0, 1.0, 3000, dtype=np.float32), np.full(3000, 0.25, np.float32)]
  results = [process.next(process.initialize(), values).result for _ in range(20)]
  step = factory.calibrate(VECTOR).grid_step
  assert step > 1e-3  # a coarse grid: rounding is visible in each result, unbiased on average
  np.testing.assert_allclose(np.mean(results, axis=0), np.mean(values, axis=0), atol=5 * step / math.sqrt(20))


def test_hadamard_is_orthonormal_and_its_own_inverse():
  x = tf.constant(np.random.default_rng(0).normal(size=16))
  y = ddg.hadamard(x)
  assert float(tf.norm(y)) == pytest.approx(float(tf.norm(x)))
  np.testing.assert_allclose(ddg.hadamard(y), x, atol=1e-12)


def _gaussian_rdp_epsilon(noise_multiplier, rounds, delta):
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), rounds))
  return accountant.get_epsilon(delta)


def test_with_large_noise_shares_epsilon_is_the_gaussian_of_the_honest_sum():
  """tau vanishes (variance ~ 2**22): Proposition 14 is the Gaussian RDP at sqrt(n * variance) / sensitivity."""
  factory = ddg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=10, min_clients=8)
  process = factory.create(VECTOR)
  state = process.initialize()
  for _ in range(3):
    output = process.next(state, [np.full(3000, 0.01, np.float32)] * 10)
    state = output.state
  calibration = factory.calibrate(VECTOR)
  effective = math.sqrt(8 * calibration.variance / calibration.l2_bound_squared)
  assert 0.9 < effective < 1.0  # the rounding inflates the sensitivity a little
  expected = _gaussian_rdp_epsilon(effective, 3, 1e-5)
  assert output.measurements['epsilon'] == pytest.approx(expected, rel=1e-9)
  assert factory.epsilon_after(3, VECTOR) == pytest.approx(expected, rel=1e-9)
  assert output.measurements['rounds'] == 3


def test_small_noise_shares_pay_the_sum_of_discrete_gaussians_term():
  """Variance 1 per client, 3 clients: Proposition 14's three bounds with tau = 10 (e**-pi**2 + e**(-4 pi**2 / 3))."""
  factory = ddg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=3, bits=4, wrap_probability=0.01)
  calibration = factory.calibrate(tff.TensorType(np.float32, [4]))
  assert calibration.variance == 1
  tau, d = 10 * (math.exp(-math.pi**2) + math.exp(-4 * math.pi**2 / 3)), 4
  sensitivity = math.sqrt(calibration.l2_bound_squared)
  l2, l1 = sensitivity / math.sqrt(3), sensitivity * min(2.0, sensitivity) / math.sqrt(3)
  orders = agg.privacy_accounting.RDP_ORDERS
  bounds = [orders / 2 * l2**2 + tau * d, orders / 2 * (l2**2 + 2 * l1 * tau + tau**2 * d), orders / 2 * (l2 + 2 * tau) ** 2]
  np.testing.assert_allclose(calibration.rdp_per_round, np.minimum.reduce(bounds), rtol=1e-12)
  assert np.all(calibration.rdp_per_round > orders / 2 * l2**2)  # more than the Gaussian of the same variance


def test_replace_one_doubles_the_sensitivity():
  zero_out = ddg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=10).calibrate(VECTOR)
  replace = ddg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=10, relation='replace_one')
  np.testing.assert_allclose(replace.calibrate(VECTOR).rdp_per_round, 4 * zero_out.rdp_per_round, rtol=1e-9)


def test_the_round_beyond_the_budget_is_not_run():
  unlimited = ddg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=2, output='sum')
  budget = (unlimited.epsilon_after(2, VECTOR) + unlimited.epsilon_after(3, VECTOR)) / 2
  factory = unlimited.replace(max_epsilon=budget)
  process = factory.create(VECTOR)
  state = process.initialize()
  released = []
  for _ in range(4):
    output = process.next(state, [np.full(3000, 0.01, np.float32)] * 2)
    state = output.state
    released.append(bool(output.measurements['released']))
    assert output.measurements['budget_exhausted'] == (not released[-1])
  rounds = int(state['rounds'])
  assert released == [True, True, False, False] and rounds == 2
  assert output.measurements['epsilon'] == pytest.approx(factory.epsilon_after(2, VECTOR)) and factory.epsilon_after(2, VECTOR) <= budget
  np.testing.assert_array_equal(output.result, 0.0)


def test_chained_after_cluster_quality_weighting_everything_is_secure():
  with pytest.warns(UserWarning, match='sums the client weights without noise'):
    factory = agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=16, report_quality_range=False,
                                    statistics_sum_factory=agg.SecureFixedPointSum(16.0)),
        agg.DistributedDiscreteGaussian(0.5, 1.0, expected_clients_per_round=3),
        weight_sum_factory=agg.SecureFixedPointSum(4.0),
    )
  process = factory.create(tff.TensorType(np.float32, [8]), tff.TensorType(np.float32))
  tff.test.assert_not_contains_unsecure_aggregation(process.next)


@pytest.mark.parametrize('value_type', BAD_VALUE_TYPES, ids=BAD_VALUE_TYPE_IDS)
def test_bad_value_types_raise_at_create(value_type):
  with pytest.raises(TypeError):
    ddg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=2).create(value_type)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(noise_multiplier=-1.0), ValueError, 'noise_multiplier'),
        (dict(clip=0.0), ValueError, 'clip'),
        (dict(expected_clients_per_round=0), ValueError, 'expected_clients_per_round'),
        (dict(min_clients=11), ValueError, 'min_clients'),
        (dict(bits=41), ValueError, 'bits'),
        (dict(bits=3, expected_clients_per_round=100), ValueError, 'too few'),
        (dict(wrap_probability=0.0), ValueError, 'wrap_probability'),
        (dict(beta=1.0), ValueError, 'beta'),
        (dict(relation='add_remove'), ValueError, 'relation'),
        (dict(target_delta=1.0), ValueError, 'target_delta'),
        (dict(max_epsilon=0.0), ValueError, 'max_epsilon'),
        (dict(output='median'), ValueError, 'output'),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
  arguments = {**dict(noise_multiplier=1.0, clip=1.0, expected_clients_per_round=10), **kwargs}
  with pytest.raises(error, match=match):
    ddg.DistributedDiscreteGaussian(**arguments)


def test_the_sampler_bounds_the_noise_it_can_draw():
  factory = ddg.DistributedDiscreteGaussian(100.0, 1.0, expected_clients_per_round=2)
  assert factory.calibrate(VECTOR).variance <= discrete_gaussian.MAX_VARIANCE
