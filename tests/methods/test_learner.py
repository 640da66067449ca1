"""Every method trains in the same LearningProcess with any aggregation factory."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from sklearn.datasets import load_digits

from tff_orchestra import aggregators as agg
from tff_orchestra import methods
from tff_orchestra.orchestra import OrchestraConfig

CONFIG = OrchestraConfig(projection_dim=16, local_epochs=1, flip=False, num_global_clusters=8, num_local_clusters=4,
                         memory_size=32, global_clustering_steps=10)


def _client_datasets():
  images, _ = load_digits(return_X_y=True)
  images = (images / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
  return [tf.data.Dataset.from_tensor_slices(images[i * 40:(i + 1) * 40]).batch(16) for i in range(2)]


@pytest.mark.parametrize('name', ['simclr', 'byol', 'simsiam', 'specloss', 'rotation'])
def test_each_method_trains_with_a_chained_factory(name):
  factory = agg.chain(agg.ClusterQualityWeighting(2, sketch_dim=32), tff.aggregators.MeanFactory())
  process = methods.build_learning_process((8, 8, 1), method=name, config=CONFIG,
                                           model_update_aggregation_factory=factory)
  state = process.initialize()
  before = process.get_model_weights(state)
  output = process.next(state, _client_datasets())
  train = output.metrics['client_work']['train']
  assert np.isfinite(train['loss']) and train['examples'] == 64.0  # 2 clients x 2 full batches of 16
  after = process.get_model_weights(output.state)
  assert any(not np.allclose(a, b) for a, b in zip(after.trainable, before.trainable))
  assert 'cluster_quality' in str(output.metrics['aggregator'])


def test_centroid_factory_is_orchestras_alone():
  with pytest.raises(ValueError, match='only Orchestra sends centroids'):
    methods.build_learning_process((8, 8, 1), method='simclr', config=CONFIG,
                                   centroid_aggregation_factory=agg.GaussianNoise(0.0, clip=1.0, output='sum'))
