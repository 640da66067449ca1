import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregators.testing import BAD_VALUE_TYPE_IDS, BAD_VALUE_TYPES
from tff_orchestra.aggregators import SecureFixedPointSum

SCALAR = tff.TensorType(np.float32)
STRUCT = tff.to_type(((np.float32, (2,)), np.float64))
MEASUREMENTS = collections.OrderedDict(
    secure_clipped_count=np.int64, secure_bound=np.float32, secure_quantization_step=np.float32,
    non_finite_clients=np.int64,
)


@pytest.fixture(scope='module')
def scalar_process():
  return SecureFixedPointSum(2.0, bits=16, max_clients=8).create(SCALAR)


@pytest.fixture(scope='module')
def struct_process():
  return SecureFixedPointSum(2.0, bits=16, max_clients=8).create(STRUCT)


@pytest.fixture(scope='module')
def adaptive_process():
  estimator = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      1.0, target_quantile=1.0, learning_rate=1.0, secure_estimation=True
  )
  return SecureFixedPointSum(estimator, bits=16).create(STRUCT)


def test_is_unweighted(scalar_process):
  assert isinstance(SecureFixedPointSum(), tff.aggregators.UnweightedAggregationFactory)
  assert not scalar_process.is_weighted


@pytest.mark.parametrize('value_type', [SCALAR, STRUCT], ids=['scalar', 'struct'])
def test_type_signature(value_type, scalar_process, struct_process):
  process = scalar_process if value_type is SCALAR else struct_process
  server_state = tff.FederatedType((), tff.SERVER)
  expected_next = tff.FunctionType(
      parameter=collections.OrderedDict(state=server_state, value=tff.FederatedType(value_type, tff.CLIENTS)),
      result=tff.templates.MeasuredProcessOutput(
          state=server_state,
          result=tff.FederatedType(value_type, tff.SERVER),
          measurements=tff.FederatedType(MEASUREMENTS, tff.SERVER),
      ),
  )
  assert process.next.type_signature.is_equivalent_to(expected_next)
  assert process.initialize.type_signature.is_equivalent_to(tff.FunctionType(None, server_state))


def test_sums_scalars_and_reports(scalar_process):
  output = scalar_process.next(scalar_process.initialize(), [1.0, 0.5, 3.0])
  step = 4.0 / (2**16 - 1)
  assert output.result == pytest.approx(1.0 + 0.5 + 2.0, abs=3 * step)  # 3.0 clipped to 2.0
  assert output.measurements == collections.OrderedDict(
      secure_clipped_count=1, secure_bound=2.0, secure_quantization_step=pytest.approx(step), non_finite_clients=0
  )


def test_sums_structs_over_rounds_keeping_dtypes(struct_process):
  state = struct_process.initialize()
  for _ in range(3):
    output = struct_process.next(state, [((1.0, -0.25), 0.5), ((0.5, -1.0), 0.25)])
    state = output.state
    (vector, scalar) = output.result
    assert vector.dtype == np.float32 and isinstance(scalar, (float, np.float64))
    np.testing.assert_allclose(vector, [1.5, -1.25], atol=2e-4)
    assert scalar == pytest.approx(0.75, abs=2e-4)
    assert output.measurements['secure_clipped_count'] == 0


def test_stochastic_rounding_is_unbiased():
  """A value between two grid points decodes, on average, to itself."""
  process = SecureFixedPointSum(1.0, bits=2, max_clients=1000).create(SCALAR)  # step = 2/3
  value = 0.1  # between grid points -1/3 and 1/3
  clients = 1000
  result = process.next(process.initialize(), [value] * clients).result
  mean = result / clients
  # Each client's rounding error is two-point on {-13/30, +7/30}: std ~0.31.
  std_of_mean = np.sqrt((0.1 + 1 / 3) * (1 / 3 - 0.1)) / np.sqrt(clients)
  assert abs(mean - value) < 4 * std_of_mean
  assert abs(mean - 1 / 3) > 10 * std_of_mean  # what rounding to nearest would give


def test_adaptive_bound_follows_largest_coordinate(adaptive_process):
  state = adaptive_process.initialize()
  bounds = []
  for _ in range(4):
    output = adaptive_process.next(state, [((3.0, 0.2), 0.5), ((1.0, 0.2), 0.5)])
    state = output.state
    bounds.append(output.measurements['secure_bound'])
  assert bounds[0] == pytest.approx(1.0)
  assert bounds == sorted(bounds) and bounds[-1] > 2.0
  tff.test.assert_not_contains_unsecure_aggregation(adaptive_process.next)


def test_no_unsecure_aggregation(scalar_process, struct_process):
  tff.test.assert_not_contains_unsecure_aggregation(scalar_process.next)
  tff.test.assert_not_contains_unsecure_aggregation(struct_process.next)


def test_mean_factory_with_secure_value_and_weight_sums():
  factory = tff.aggregators.MeanFactory(
      value_sum_factory=SecureFixedPointSum(10.0, bits=24),
      weight_sum_factory=SecureFixedPointSum(10.0, bits=24),
  )
  process = factory.create(STRUCT, tff.TensorType(np.float32))
  tff.test.assert_not_contains_unsecure_aggregation(process.next)
  output = process.next(process.initialize(), [((1.0, 2.0), 3.0), ((3.0, 0.0), 1.0)], [1.0, 3.0])
  np.testing.assert_allclose(output.result[0], [2.5, 0.5], atol=1e-4)
  assert output.result[1] == pytest.approx(1.5, abs=1e-4)


def test_more_clients_than_declared_fails_instead_of_overflowing():
  # Our context raises the worker's failed assertion as TensorFlow does, not as a gRPC error.
  process = SecureFixedPointSum(1.0, bits=8, max_clients=2).create(SCALAR)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r'more clients than max_clients=2 .*= +3 '):
    process.next(process.initialize(), [0.5, 0.5, 0.5])


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(bits=40, max_clients=10**7), ValueError, 'could overflow'),
        (dict(bits=0), ValueError, 'bits'),
        (dict(bits=62), ValueError, 'bits'),
        (dict(bits=20.0), TypeError, 'bits'),
        (dict(bound=0.0), ValueError, 'bound'),
        (dict(bound=-1.0), ValueError, 'bound'),
        (dict(bound=float('nan')), ValueError, 'bound'),
        (dict(bound='1'), TypeError, 'bound'),
        (dict(max_clients=0), ValueError, 'max_clients'),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    SecureFixedPointSum(**kwargs)


@pytest.mark.parametrize('value_type', BAD_VALUE_TYPES, ids=BAD_VALUE_TYPE_IDS)
def test_bad_value_type_raises_type_error(value_type):
  with pytest.raises(TypeError, match='value_type'):
    SecureFixedPointSum().create(value_type)
