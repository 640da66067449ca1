"""The Orchestra learning process end to end, on a tiny partition of digits."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from sklearn.datasets import load_digits

from tff_orchestra import aggregators as agg
from tff_orchestra import orchestra
from tff_orchestra.orchestra.features import embed

SHAPE = (8, 8, 1)
CONFIG = orchestra.OrchestraConfig(
    num_global_clusters=8, num_local_clusters=4, memory_size=32, projection_dim=16, local_epochs=1,
    global_clustering_steps=30,
)


def _client_datasets(num_clients=3, per_client=40):
  images, _ = load_digits(return_X_y=True)
  images = (images / 16.0).reshape(-1, *SHAPE).astype(np.float32)
  return [
      tf.data.Dataset.from_tensor_slices(images[i * per_client:(i + 1) * per_client]).batch(16)
      for i in range(num_clients)
  ]


@pytest.fixture(scope='module')
def process():
  return orchestra.build_orchestra_process(SHAPE, config=CONFIG)


def test_is_a_tff_learning_process(process):
  assert isinstance(process, tff.learning.templates.LearningProcess)
  state = process.initialize()
  weights = process.get_model_weights(state)
  assert isinstance(weights, tff.learning.models.ModelWeights)
  assert len(weights.non_trainable) > len(weights.trainable) // 2  # BN stats + target network


def test_round_zero_builds_global_centroids_from_local_ones(process):
  state = process.initialize()
  initial_centroids = orchestra.global_centroids(state)
  output = process.next(state, _client_datasets())
  clustering = output.metrics['client_work']['global_clustering']
  assert clustering['local_centroids'] == 3 * CONFIG.num_local_clusters
  assert clustering['loss'] < clustering['loss_before']
  assert clustering['clusters_in_use'] >= 2
  centroids = orchestra.global_centroids(output.state)
  assert not np.allclose(centroids, initial_centroids)
  np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
  # No training in round 0: the model is unchanged.
  before, after = process.get_model_weights(state), process.get_model_weights(output.state)
  for a, b in zip(before.trainable + before.non_trainable, after.trainable + after.non_trainable):
    np.testing.assert_array_equal(a, b)
  assert output.metrics['client_work']['train']['cluster_loss'] == 0.0
  assert orchestra.round_num(output.state) == 1


def test_empty_and_non_finite_clients_do_not_poison_the_round(process):
  """Their updates, centroids and losses are dropped; the round equals one without them."""
  good = _client_datasets(1)[0]
  empty = good.take(0)
  not_finite = good.map(lambda images: images * np.float32(np.nan))
  alone = mixed = process.initialize()
  for _ in range(2):  # round 0 (centroids only) and one training round
    alone = process.next(alone, [good])
    mixed = process.next(mixed, [good, empty, not_finite])
    train_metrics = mixed.metrics['client_work']['train']
    assert train_metrics['empty_clients'] == 1 and train_metrics['non_finite_clients'] == 1
    assert mixed.metrics['client_work']['global_clustering']['local_centroids'] == CONFIG.num_local_clusters
    alone, mixed = alone.state, mixed.state
  for ours, theirs in zip(tf.nest.flatten(process.get_model_weights(mixed)), tf.nest.flatten(process.get_model_weights(alone))):
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(orchestra.global_centroids(mixed), orchestra.global_centroids(alone), atol=1e-5)


def test_features_of_the_model_weights(process):
  weights = process.get_model_weights(process.initialize())
  images = np.random.default_rng(0).uniform(size=(5, *SHAPE)).astype(np.float32)
  features, projections = embed(weights, images, encoder='small_cnn', projection_dim=CONFIG.projection_dim)
  assert features.shape == (5, 128) and projections.shape == (5, 16)
  np.testing.assert_allclose(np.linalg.norm(projections, axis=1), 1.0, atol=1e-5)


def _chain():
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    return agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=64),
        agg.GaussianNoise(1e-3, clip=100.0, expected_clients_per_round=3),
        agg.secure_integer_sum(),
    )


FACTORIES = {
    'mean': lambda: None,
    'cluster_quality': lambda: agg.ClusterQualityWeighting(2, sketch_dim=64),
    'gaussian_noise': lambda: agg.GaussianNoise(1e-3, clip=100.0, expected_clients_per_round=3, output='mean'),
    'secure_mean': lambda: tff.aggregators.MeanFactory(agg.SecureFixedPointSum(100.0, bits=30), agg.SecureFixedPointSum(1e4, bits=30)),
    'three_chained': _chain,
}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(FACTORIES))
def test_trains_with_each_factory(name):
  learner = orchestra.build_orchestra_process(
      SHAPE, config=CONFIG, model_update_aggregation_factory=FACTORIES[name]()
  )
  state = learner.initialize()
  data = _client_datasets()
  for _ in range(3):
    output = learner.next(state, data)
    state = output.state
  train = output.metrics['client_work']['train']
  assert np.isfinite(train['cluster_loss']) and train['cluster_loss'] > 0
  assert np.isfinite(train['degeneracy_loss']) and train['examples'] == 96.0  # 3 clients x 2 full batches of 16
  assert output.metrics['client_work']['global_clustering']['clusters_in_use'] >= 1
  weights = learner.get_model_weights(state)
  assert all(np.all(np.isfinite(w)) for w in weights.trainable + weights.non_trainable)
  aggregator = output.metrics['aggregator']
  if name == 'three_chained':
    assert np.isfinite(aggregator['cluster_quality']['mean_value']['epsilon'])
    assert 'secure_upper_threshold' in aggregator['cluster_quality']['mean_value']['dp']
  if name == 'gaussian_noise':
    assert aggregator['rounds'] == 3


def _weights_after_training_round(learner):
  state = learner.initialize()
  for _ in range(2):  # round 0 trains nothing
    state = learner.next(state, _client_datasets()).state
  return tf.nest.flatten(learner.get_model_weights(state))


@pytest.fixture(scope='module')
def mean_weights(process):
  """The default weighted MeanFactory's weights after a training round, trained once for the module."""
  return _weights_after_training_round(process)


@pytest.mark.slow
@pytest.mark.parametrize(
    'make_factory',
    [
        lambda: agg.GaussianNoise(0.0, clip=1e3, expected_clients_per_round=3),
        lambda: agg.chain(agg.GaussianNoise(0.0, clip=1e3, output='sum'), agg.secure_integer_sum()),
    ],
    ids=['GaussianNoise alone', 'chain of sums'],
)
def test_the_model_moves_by_the_mean_update(mean_weights, make_factory):
  """Equal example counts: the default weighted MeanFactory is the plain mean these must equal."""
  learner = orchestra.build_orchestra_process(SHAPE, config=CONFIG, model_update_aggregation_factory=make_factory())
  for ours, mean in zip(_weights_after_training_round(learner), mean_weights):
    np.testing.assert_allclose(ours, mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    'factory', [agg.SecureFixedPointSum(), tff.aggregators.SumFactory(), agg.GaussianNoise(1.0, 1.0, output='sum')]
)
def test_a_factory_that_sums_is_refused(factory):
  with pytest.raises(ValueError, match=r'model_update_aggregation_factory: \w+ yields the sum.*agg\.chain'):
    orchestra.build_orchestra_process(SHAPE, config=CONFIG, model_update_aggregation_factory=factory)


def test_bad_arguments():
  with pytest.raises(ValueError, match='input_shape'):
    orchestra.build_orchestra_process((8, 6, 1))
  with pytest.raises(ValueError, match='encoder'):
    orchestra.build_orchestra_process(SHAPE, encoder='vgg')
  with pytest.raises(TypeError, match='model_update_aggregation_factory'):
    orchestra.build_orchestra_process(SHAPE, model_update_aggregation_factory='mean')
  with pytest.raises(TypeError, match='config'):
    orchestra.build_orchestra_process(SHAPE, config={'temperature': 0.1})


def test_noised_updates_keep_batchnorm_variances_non_negative():
  learner = orchestra.build_orchestra_process(
      SHAPE, config=CONFIG,
      model_update_aggregation_factory=agg.GaussianNoise(2.0, clip=10.0, expected_clients_per_round=3, output='mean'),
  )
  state = learner.next(learner.initialize(), _client_datasets()).state
  names = [v.name for v in orchestra.OrchestraNetworks(orchestra.small_cnn, SHAPE, CONFIG.projection_dim).non_trainable]
  weights = learner.get_model_weights(state)
  variances = np.concatenate([w.ravel() for w, n in zip(weights.non_trainable, names) if 'moving_variance' in n])
  assert variances.size > 0 and variances.min() == 0.0  # noise pushed some below zero: clamped


def test_private_centroids_send_nothing_but_the_two_factories_aggregations():
  from tff_orchestra.aggregators import privacy_check  # pylint: disable=import-outside-toplevel

  update_noise = agg.GaussianNoise(0.01, 10.0, expected_clients_per_round=3, report_clipping=False)
  centroid_noise = agg.GaussianNoise(0.01, 2.0, output='sum', report_clipping=False)
  process = orchestra.build_orchestra_process(
      SHAPE, config=CONFIG, client_weighting=tff.learning.ClientWeighting.UNIFORM,
      model_update_aggregation_factory=update_noise, centroid_aggregation_factory=centroid_noise,
  )
  weights_type = process.get_model_weights.type_signature.result
  sums_size = CONFIG.num_global_clusters * (CONFIG.projection_dim + 1)
  noised = [update_noise.noised_channel_type(weights_type), tff.TensorType(np.int64, [sums_size])]
  found = privacy_check.channels(process.next, noised, 'discrete Gaussian')
  assert len(found) == 2 and all(c.covered_by_epsilon for c in found), found
  state = process.initialize()
  initial = orchestra.global_centroids(state)
  output = process.next(state, _client_datasets())  # round 0: the banks fill, the centroids move
  state = output.state
  work = output.metrics['client_work']
  assert 'train' not in work and work['global_clustering']['clusters_in_use'] >= 1
  assert np.isfinite(work['centroid_aggregation']['epsilon'])
  centroids = orchestra.global_centroids(state)
  assert not np.allclose(centroids, initial)
  moved = ~np.all(np.isclose(centroids, initial), axis=1)
  np.testing.assert_allclose(np.linalg.norm(centroids[moved], axis=1), 1.0, atol=1e-5)


def test_global_cluster_sums_are_bounded_by_the_bank():
  from tff_orchestra.orchestra import client_work  # pylint: disable=import-outside-toplevel

  bank = tf.math.l2_normalize(tf.random.stateless_normal([32, 16], seed=[1, 2]), axis=1)
  centroids = tf.math.l2_normalize(tf.random.stateless_normal([8, 16], seed=[3, 4]), axis=1)
  for filled in (0, 10, 32):
    sums = client_work.global_cluster_sums(bank, tf.constant(filled), centroids)
    assert float(tf.norm(sums['sums'])) <= 1.0 + 1e-6 and float(tf.norm(sums['masses'])) <= 1.0 + 1e-6
    assert float(tf.reduce_sum(sums['masses'])) == pytest.approx(filled / 32, abs=1e-3)


def test_a_centroid_factory_that_averages_is_refused():
  with pytest.raises(ValueError, match="centroid_aggregation_factory.*output='sum'"):
    orchestra.build_orchestra_process(SHAPE, config=CONFIG, centroid_aggregation_factory=tff.aggregators.UnweightedMeanFactory())
  with pytest.raises(TypeError, match='centroid_aggregation_factory'):
    orchestra.build_orchestra_process(SHAPE, config=CONFIG, centroid_aggregation_factory=tff.aggregators.MeanFactory())
