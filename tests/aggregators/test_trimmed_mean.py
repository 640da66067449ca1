"""TrimmedMean against scipy.stats.trim_mean: random values, ties, fewer clients than the trim needs."""

import numpy as np
import pytest
import tensorflow_federated as tff
from scipy import stats

from tff_orchestra import aggregators as agg
from tests.aggregators import testing

VECTOR = tff.TensorType(np.float32, [5])


@pytest.fixture(scope='module')
def process():
  return agg.TrimmedMean(0.2).create(VECTOR)


@pytest.mark.parametrize('clients, trimmed', [(1, 0), (2, 0), (4, 0), (5, 1), (9, 1), (10, 2), (11, 2)])
def test_matches_scipy_on_random_values(process, clients, trimmed):
  # Below 5 clients 0.2 x n rounds down to 0: nothing is trimmed, and it is the mean.
  values = np.random.default_rng(clients).normal(size=(clients, 5)).astype(np.float32)
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, stats.trim_mean(values, 0.2, axis=0), rtol=1e-5)
  assert output.measurements == {'clients': clients, 'non_finite_clients': 0, 'trimmed_per_side': trimmed}


def test_ties_and_outliers_at_both_ends(process):
  values = np.array([[1] * 5, [1] * 5, [2] * 5, [2] * 5, [3] * 5, [1e6] * 5, [-1e6] * 5], np.float32)
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, stats.trim_mean(values, 0.2, axis=0))
  np.testing.assert_allclose(output.result, np.full(5, 1.8))


def test_non_finite_clients_are_left_out_before_counting_the_trim(process):
  finite = np.random.default_rng(3).normal(size=(5, 5)).astype(np.float32)
  output = process.next(process.initialize(), list(finite) + [np.full(5, -np.inf, np.float32)])
  np.testing.assert_allclose(output.result, stats.trim_mean(finite, 0.2, axis=0), rtol=1e-5)
  assert output.measurements == {'clients': 5, 'non_finite_clients': 1, 'trimmed_per_side': 1}


def test_zero_trim_is_the_mean():
  process = agg.TrimmedMean(0.0).create(VECTOR)
  values = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
  np.testing.assert_allclose(process.next(process.initialize(), list(values)).result, values.mean(0), rtol=1e-5)


@pytest.mark.parametrize('trim_fraction, error', [(0.5, ValueError), (-0.1, ValueError), ('0.2', TypeError)])
def test_bad_trim_fractions_are_refused(trim_fraction, error):
  with pytest.raises(error, match='trim_fraction'):
    agg.TrimmedMean(trim_fraction)


@pytest.mark.parametrize('value_type', testing.BAD_VALUE_TYPES, ids=testing.BAD_VALUE_TYPE_IDS)
def test_bad_value_types_are_refused(value_type):
  with pytest.raises(TypeError, match='TrimmedMean.create'):
    agg.TrimmedMean().create(value_type)
