"""MultiKrum against a direct numpy transcription of Blanchard et al. (2017)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tests.aggregators import testing

VECTOR = tff.TensorType(np.float32, [4])


def numpy_multi_krum(values, f, m=None):
  n = len(values)
  neighbours = min(max(1, n - f - 2), n - 1)
  scores = []
  for i in range(n):
    distances = sorted(float(np.sum((values[i] - values[j]) ** 2, dtype=np.float64)) for j in range(n) if j != i)
    scores.append(sum(distances[:neighbours]))
  selected = min(max(1, n - f if m is None else m), n)
  best = np.argsort(scores, kind='stable')[:selected]
  return values[best].mean(axis=0)


@pytest.fixture(scope='module')
def processes():
  return {(f, m): agg.MultiKrum(f, m).create(VECTOR) for f, m in [(1, None), (2, 1), (3, 4)]}


@pytest.mark.parametrize('f, m', [(1, None), (2, 1), (3, 4)])
@pytest.mark.parametrize('clients', [2, 3, 6, 9])
def test_matches_numpy_on_random_values(processes, f, m, clients):
  values = np.random.default_rng(10 * clients + f).normal(size=(clients, 4)).astype(np.float32)
  process = processes[(f, m)]
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, numpy_multi_krum(values, f, m), rtol=1e-5, atol=1e-6)
  expected_selected = min(max(1, clients - f if m is None else m), clients)
  assert output.measurements['selected_clients'] == expected_selected


def test_a_single_client_is_its_own_result(processes):
  process = processes[(1, None)]
  np.testing.assert_allclose(process.next(process.initialize(), [np.arange(4, dtype=np.float32)]).result, np.arange(4))


def test_ties_go_to_the_earlier_client_and_outliers_are_dropped(processes):
  honest = [np.array([1, 0, 0, 0], np.float32), np.array([1, 0, 0, 0], np.float32), np.array([0, 1, 0, 0], np.float32)]
  attackers = [np.full(4, 50.0, np.float32), np.full(4, -50.0, np.float32)]
  process = processes[(2, 1)]
  values = np.stack(honest + attackers)
  output = process.next(process.initialize(), list(values))
  np.testing.assert_allclose(output.result, numpy_multi_krum(values, 2, 1))
  np.testing.assert_allclose(output.result, honest[0])


def test_non_finite_clients_are_left_out(processes):
  values = np.random.default_rng(5).normal(size=(6, 4)).astype(np.float32)
  process = processes[(1, None)]
  output = process.next(process.initialize(), list(values) + [np.array([np.nan, 0, 0, 0], np.float32)])
  np.testing.assert_allclose(output.result, numpy_multi_krum(values, 1), rtol=1e-5, atol=1e-6)
  assert output.measurements['non_finite_clients'] == 1


@pytest.mark.parametrize('kwargs, error', [
    ({'num_byzantine': -1}, ValueError), ({'num_byzantine': 1.5}, TypeError), ({'num_selected': 0}, ValueError),
])
def test_bad_arguments_are_refused(kwargs, error):
  with pytest.raises(error, match=next(iter(kwargs))):
    agg.MultiKrum(**kwargs)


@pytest.mark.parametrize('value_type', testing.BAD_VALUE_TYPES, ids=testing.BAD_VALUE_TYPE_IDS)
def test_bad_value_types_are_refused(value_type):
  with pytest.raises(TypeError, match='MultiKrum.create'):
    agg.MultiKrum().create(value_type)
