"""CoordinateMedian against numpy.median: odd and even counts, ties, non-finite clients, structures."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tests.aggregators import testing

VECTOR = tff.TensorType(np.float32, [5])


@pytest.fixture(scope='module')
def process():
  return agg.CoordinateMedian().create(VECTOR)


@pytest.mark.parametrize('clients', [1, 2, 3, 6, 7])
def test_matches_numpy_on_random_values(process, clients):
  values = np.random.default_rng(clients).normal(size=(clients, 5)).astype(np.float32)
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, np.median(values, axis=0), rtol=1e-6)
  assert output.measurements == {'clients': clients, 'non_finite_clients': 0}


def test_ties_and_a_minority_of_outliers(process):
  values = np.array([[1, 1, 0, 2, 5], [1, 1, 0, 2, 5], [1, 2, 0, 3, 5], [1e6, -1e6, 1e6, -1e6, 1e6]], np.float32)
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, np.median(values, axis=0))
  np.testing.assert_allclose(output.result, [1, 1, 0, 2, 5])


def test_non_finite_clients_are_left_out(process):
  finite = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
  broken = [np.array([np.nan, 0, 0, 0, 0], np.float32), np.array([0, 0, np.inf, 0, 0], np.float32)]
  output = process.next(process.initialize(), list(finite) + broken)
  np.testing.assert_allclose(output.result, np.median(finite, axis=0), rtol=1e-6)
  assert output.measurements == {'clients': 4, 'non_finite_clients': 2}


def test_a_round_without_finite_values_yields_zeros(process):
  output = process.next(process.initialize(), [np.full(5, np.nan, np.float32)])
  np.testing.assert_array_equal(output.result, np.zeros(5))
  assert output.measurements['clients'] == 0


def test_structures_keep_their_shapes_and_dtypes():
  value_type = tff.to_type([(np.float32, [2, 2]), np.float64])
  process = agg.CoordinateMedian().create(value_type)
  values = [[np.full((2, 2), v, np.float32), np.float64(-v)] for v in (1.0, 2.0, 9.0)]
  result = process.next(process.initialize(), values).result
  np.testing.assert_array_equal(result[0], np.full((2, 2), 2.0))
  assert result[0].dtype == np.float32 and result[1] == -2.0


def test_is_an_unweighted_factory_yielding_a_stand_in_for_the_mean():
  factory = agg.CoordinateMedian()
  assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)
  assert agg.output_of(factory) == 'mean'


@pytest.mark.parametrize('value_type', testing.BAD_VALUE_TYPES, ids=testing.BAD_VALUE_TYPE_IDS)
def test_bad_value_types_are_refused(value_type):
  with pytest.raises(TypeError, match='CoordinateMedian.create'):
    agg.CoordinateMedian().create(value_type)
