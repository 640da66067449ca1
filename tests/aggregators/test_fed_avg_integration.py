"""Each factory, and the three chained, as `model_aggregator` of TFF's federated averaging."""

import collections
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg

ROUNDS = 3


def _model_fn():
  keras_model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(4,)),
      tf.keras.layers.Dense(3, kernel_initializer='zeros'),
  ])
  return tff.learning.models.from_keras_model(
      keras_model,
      input_spec=collections.OrderedDict(x=tf.TensorSpec([None, 4], tf.float32), y=tf.TensorSpec([None], tf.int32)),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )


def _client_data(num_clients=4):
  rng = np.random.default_rng(0)
  datasets = []
  for _ in range(num_clients):
    labels = rng.integers(0, 3, 16).astype(np.int32)
    features = (np.eye(3, 4)[labels] + 0.1 * rng.normal(size=(16, 4))).astype(np.float32)
    datasets.append(tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=features, y=labels)).batch(8))
  return datasets


def _secure_mean():
  return tff.aggregators.MeanFactory(agg.SecureFixedPointSum(4.0), agg.SecureFixedPointSum(4.0))


def _three_chained():
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    return agg.chain(
        agg.ClusterQualityWeighting(2),
        agg.GaussianNoise(0.01, 5.0, expected_clients_per_round=4),
        agg.secure_integer_sum(),
    )


def _fed_avg(model_aggregator, weighted):
  """TFF's weighted (uniform client weights) or unweighted fed-avg with `model_aggregator`."""
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.5)
  if weighted:
    return tff.learning.algorithms.build_weighted_fed_avg(
        _model_fn, optimizer, client_weighting=tff.learning.ClientWeighting.UNIFORM, model_aggregator=model_aggregator
    )
  return tff.learning.algorithms.build_unweighted_fed_avg(_model_fn, optimizer, model_aggregator=model_aggregator)


CASES = {
    'cluster_quality': (lambda: agg.ClusterQualityWeighting(2), True, ('quality_mean', 'effective_clients')),
    'gaussian_noise': (
        lambda: agg.GaussianNoise(0.01, 5.0, expected_clients_per_round=4, output='mean'),
        False,
        ('epsilon', 'clipped_fraction'),
    ),
    'secure_mean': (_secure_mean, True, ('mean_value',)),
    'three_chained': (_three_chained, True, ('quality_mean', 'cluster_quality')),
    'cluster_quality_robust': (lambda: agg.ClusterQualityWeighting(2, robust=True), True, ('norm_bound',)),
    'multi_krum': (lambda: agg.MultiKrum(num_byzantine=1), False, ('selected_clients',)),
    'clipped_median': (lambda: agg.chain(agg.MedianNormClipping(), agg.CoordinateMedian()), False, ('clip',)),
}


@pytest.mark.parametrize('name', list(CASES))
def test_trains_in_fed_avg(name):
  make_factory, weighted, expected_keys = CASES[name]
  learner = _fed_avg(make_factory(), weighted)
  data = _client_data()
  state = learner.initialize()
  losses = []
  for _ in range(ROUNDS):
    output = learner.next(state, data)
    state = output.state
    losses.append(output.metrics['client_work']['train']['loss'])
    aggregator = output.metrics['aggregator']
    for key in expected_keys:
      assert key in aggregator
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0]
  if name == 'three_chained':
    dp = aggregator['cluster_quality']['mean_value']
    assert np.isfinite(dp['epsilon']) and dp['rounds'] == ROUNDS
    assert set(dp['dp']) == {
        'secure_upper_clipped_count', 'secure_lower_clipped_count', 'secure_upper_threshold', 'secure_lower_threshold'
    }


def _weights_after_one_round(learner):
  state = learner.next(learner.initialize(), _client_data()).state
  return tf.nest.flatten(learner.get_model_weights(state).trainable)


# The same words give the same model update as TFF's own mean: zero noise, a clip and
# bounds that touch nothing, and a grid of 2**30 steps per clip (error ~1e-6 per coordinate).
MEAN_COMPOSITIONS = {
    'weighted chain': (True, lambda: agg.chain(
        agg.ClusterQualityWeighting(2),
        agg.GaussianNoise(0.0, 1e3, expected_clients_per_round=4),
        agg.secure_integer_sum(),
    )),
    'GaussianNoise alone': (False, lambda: agg.GaussianNoise(0.0, 1e3, expected_clients_per_round=4)),
    'unweighted chain of sums': (False, lambda: agg.chain(
        agg.GaussianNoise(0.0, 1e3, output='sum'), agg.secure_integer_sum()
    )),
}


@pytest.fixture(scope='module')
def tff_mean_weights():
  return {
      True: _weights_after_one_round(_fed_avg(tff.aggregators.MeanFactory(), weighted=True)),
      False: _weights_after_one_round(_fed_avg(tff.aggregators.UnweightedMeanFactory(), weighted=False)),
  }


@pytest.mark.filterwarnings('ignore::UserWarning')
@pytest.mark.parametrize('name', list(MEAN_COMPOSITIONS))
def test_the_model_moves_by_the_mean_update_as_with_tff_mean(name, tff_mean_weights):
  weighted, make_factory = MEAN_COMPOSITIONS[name]
  learner = _fed_avg(make_factory(), weighted)
  for ours, tffs in zip(_weights_after_one_round(learner), tff_mean_weights[weighted]):
    np.testing.assert_allclose(ours, tffs, atol=1e-6)
