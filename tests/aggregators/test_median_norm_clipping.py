"""MedianNormClipping: the bound is the round's median norm, the inner factory sees clipped values."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import privacy_check
from tests.aggregators import testing

VECTOR = tff.TensorType(np.float32, [3])


def numpy_median_norm_clipping(values, multiplier=1.0):
  norms = np.linalg.norm(values, axis=1)
  bound = multiplier * np.median(norms)
  return values * np.minimum(1.0, bound / norms)[:, None], bound


@pytest.fixture(scope='module')
def process():
  return agg.MedianNormClipping().create(VECTOR)


@pytest.mark.parametrize('clients', [1, 4, 5])
def test_matches_numpy_on_random_values(process, clients):
  values = (np.random.default_rng(clients).normal(size=(clients, 3)) * np.arange(1, clients + 1)[:, None]).astype(np.float32)
  clipped, bound = numpy_median_norm_clipping(values)
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, clipped.mean(axis=0), rtol=1e-5, atol=1e-6)
  assert output.measurements['clip'] == pytest.approx(bound, rel=1e-6)
  assert output.measurements['clipped_clients'] == int(np.sum(np.linalg.norm(values, axis=1) > bound * (1 + 1e-6)))
  # The median client's own norm is the bound: it is not clipped.


def test_a_boosted_update_pulls_no_harder_than_a_typical_one(process):
  honest = [np.array([1.0, 0, 0], np.float32)] * 3
  boosted = np.array([-100.0, 0, 0], np.float32)
  output = process.next(process.initialize(), honest + [boosted])
  np.testing.assert_allclose(output.result, [(3 - 1) / 4, 0, 0], rtol=1e-6)


def test_a_non_finite_client_sends_zeros_and_no_norm(process):
  values = [np.array([3.0, 4.0, 0], np.float32), np.array([0, 1.0, 0], np.float32), np.array([np.nan, 0, 0], np.float32)]
  output = process.next(process.initialize(), values)
  assert output.measurements['clip'] == pytest.approx(3.0)  # median of 5 and 1
  assert output.measurements['non_finite_clients'] == 1
  np.testing.assert_allclose(output.result, [1.8 / 3, (2.4 + 1.0) / 3, 0], rtol=1e-6)


def test_a_sum_inner_factory_and_its_state_and_measurements_are_kept():
  process = agg.MedianNormClipping(2.0, inner_factory=testing.CountingSumFactory()).create(VECTOR)
  state = process.initialize()
  for _ in range(2):
    output = process.next(state, [np.ones(3, np.float32), 4 * np.ones(3, np.float32)])
    state = output.state
  assert state['inner_agg'] == 2
  assert output.measurements['median_norm_clipping'] == {'counted': testing.MEASUREMENT}
  np.testing.assert_allclose(output.result, np.ones(3) + 4 * np.ones(3))  # bound 2 x median norm: nothing clipped
  assert agg.MedianNormClipping(inner_factory=testing.CountingSumFactory()).output == 'sum'


def test_only_the_norms_leave_the_clients_in_the_clear_with_a_secure_inner_sum():
  factory = agg.chain(agg.MedianNormClipping(), agg.SecureFixedPointSum(10.0, bits=20, max_clients=10))
  found = privacy_check.channels(factory.create(VECTOR).next)
  unsecure = [c for c in found if not c.secure]
  # Each client's norm (with its non-finite flag), the clipped-client count and the chain's count of clients for
  # the mean; the values go through the secure sum.
  assert [c.value_type for c in unsecure] == ['<float32[1],bool>', 'int32', 'int32']


@pytest.mark.parametrize('value_type', testing.BAD_VALUE_TYPES, ids=testing.BAD_VALUE_TYPE_IDS)
def test_bad_value_types_are_refused(value_type):
  with pytest.raises(TypeError, match='MedianNormClipping.create'):
    agg.MedianNormClipping().create(value_type)


def test_bad_multiplier_is_refused():
  with pytest.raises(ValueError, match='multiplier'):
    agg.MedianNormClipping(0.0)
