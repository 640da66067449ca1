"""The non-finite policy: a NaN or infinite client (or a bad weight) is excluded and counted, by every factory,
alone, chained, and inside TFF's federated averaging; the state never absorbs a NaN."""

import collections
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregators.test_fed_avg_integration import _client_data, _fed_avg
from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import non_finite

VALUE_TYPE = tff.TensorType(np.float32, [3])
CLEAN = [np.array([1.0, 2.0, 3.0], np.float32), np.array([3.0, 2.0, 1.0], np.float32), np.array([2.0, 2.0, 5.0], np.float32)]
NON_FINITE = [np.array([np.nan, 0.0, 0.0], np.float32), np.array([0.0, -np.inf, 1.0], np.float32)]


def test_exclusion_zeroes_value_and_weight():
  value = collections.OrderedDict(a=tf.constant([1.0, np.nan]), b=tf.constant(2.0))
  zeroed, excluded = non_finite.exclude_non_finite(value)
  assert bool(excluded) and [list(np.atleast_1d(x.numpy())) for x in zeroed.values()] == [[0.0, 0.0], [0.0]]
  kept, excluded = non_finite.exclude_non_finite(tf.constant([1.0, 2.0]))
  assert not bool(excluded) and list(kept.numpy()) == [1.0, 2.0]
  for weight in (-1.0, np.nan, np.inf):
    _, zero_weight, excluded = non_finite.exclude_non_finite_weighted(tf.constant([1.0]), tf.constant(weight))
    assert bool(excluded) and float(zero_weight) == 0.0, weight
  _, kept_weight, excluded = non_finite.exclude_non_finite_weighted(tf.constant([1.0]), tf.constant(3, tf.int32))
  assert not bool(excluded) and int(kept_weight) == 3


def _readme_chain():
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    return agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=16),
        agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=5),
        agg.secure_integer_sum(),
    )


FACTORIES = {
    'secure_sum': lambda: agg.SecureFixedPointSum(10.0, bits=30, max_clients=8),
    'secure_sum_adaptive_bound': lambda: agg.SecureFixedPointSum(
        tff.aggregators.PrivateQuantileEstimationProcess.no_noise(1.0, 0.9, 1.0, secure_estimation=True),
        bits=30, max_clients=8,
    ),
    'gaussian_noise': lambda: agg.GaussianNoise(0.0, clip=100.0, output='sum'),
    'gaussian_noise_adaptive_clip': lambda: agg.GaussianNoise(
        0.0, clip=agg.AdaptiveClip(initial_clip=1.0, clipped_count_stddev=1e-9), expected_clients_per_round=5,
        output='sum',
    ),
    'cluster_quality': lambda: agg.ClusterQualityWeighting(2, sketch_dim=16),
    'readme_chain': _readme_chain,
}


def _non_finite_count(measurements) -> int:
  found = []

  def visit(node):
    if isinstance(node, dict):
      for key, child in node.items():
        if key == 'non_finite_clients':
          found.append(int(child))
        visit(child)

  visit(measurements)
  return max(found)


def _all_finite(structure) -> bool:
  return all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in tf.nest.flatten(structure))


@pytest.mark.parametrize('name', list(FACTORIES))
def test_a_non_finite_client_is_excluded_and_counted(name):
  factory = FACTORIES[name]()
  weighted = isinstance(factory, tff.aggregators.WeightedAggregationFactory)
  process = factory.create(VALUE_TYPE, tff.TensorType(np.float32)) if weighted else factory.create(VALUE_TYPE)

  def step(state, values):
    return process.next(state, values, [1.0] * len(values)) if weighted else process.next(state, values)

  state = process.initialize()
  with_bad = step(state, CLEAN + NON_FINITE)
  without = step(state, CLEAN)
  assert _non_finite_count(with_bad.measurements) == 2
  assert _all_finite(with_bad.result) and _all_finite(with_bad.state)
  np.testing.assert_allclose(with_bad.result, without.result, rtol=1e-5, atol=1e-5)
  following, expected = step(with_bad.state, CLEAN), step(without.state, CLEAN)
  if name == 'secure_sum_adaptive_bound':
    # TFF's quantile estimator takes one value per client: an excluded client's zeros count as below the bound.
    assert _all_finite(following.result) and np.isfinite(following.measurements['secure_bound'])
    assert following.measurements['secure_bound'] < expected.measurements['secure_bound']
  else:  # the next clean round is as if the bad clients never came
    np.testing.assert_allclose(following.result, expected.result, rtol=1e-4, atol=1e-4)


def test_cluster_quality_excludes_negative_and_non_finite_weights():
  process = agg.ClusterQualityWeighting(2, sketch_dim=16).create(VALUE_TYPE, tff.TensorType(np.float32))
  state = process.initialize()
  output = process.next(state, CLEAN + CLEAN[:2], [1.0, 1.0, 1.0, -1.0, np.nan])
  assert output.measurements['non_finite_clients'] == 2
  np.testing.assert_allclose(output.result, process.next(state, CLEAN, [1.0, 1.0, 1.0]).result, rtol=1e-5)
  assert _all_finite(output.state['prototype_mass']) and _all_finite(output.state['prototypes'])


def _nan_client():
  features = np.full((8, 4), np.nan, np.float32)
  labels = np.zeros(8, np.int32)
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=features, y=labels)).batch(8)


def test_a_client_with_nan_data_in_fed_avg_leaves_the_model_as_without_it():
  """TFF's client work sends a NaN client's update as zeros with weight 0; the chain gives it no say."""
  clean = _client_data()
  models = []
  for data in (clean, clean + [_nan_client()]):
    learner = _fed_avg(_readme_chain(), weighted=True)
    state = learner.initialize()
    for _ in range(2):
      state = learner.next(state, data).state
    models.append(learner.get_model_weights(state).trainable)
  assert _all_finite(models[1])
  for a, b in zip(*models):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
