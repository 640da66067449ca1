"""`embed`: the features and projections of given model weights, in inference mode."""

import numpy as np
import pytest
import tensorflow as tf

from tff_orchestra import orchestra
from tff_orchestra.orchestra import augment
from tff_orchestra.orchestra.features import embed, view_projections

SHAPE = (8, 8, 1)
PROJECTION_DIM = 16


@pytest.fixture(scope='module')
def networks():
  tf.keras.utils.set_random_seed(0)
  return orchestra.OrchestraNetworks(orchestra.small_cnn, SHAPE, PROJECTION_DIM)


def test_embed_runs_the_online_backbone_and_projector_of_the_weights(networks):
  weights = tf.nest.map_structure(lambda v: v.numpy(), networks.model_weights())
  images = np.random.default_rng(0).uniform(size=(5, *SHAPE)).astype(np.float32)
  features, projections = embed(weights, images, encoder='small_cnn', projection_dim=PROJECTION_DIM, batch_size=2)
  assert features.shape == (5, 128) and projections.shape == (5, PROJECTION_DIM)
  expected_features = networks.backbone(augment.normalize(images), training=False).numpy()
  np.testing.assert_allclose(features, expected_features, rtol=1e-5, atol=1e-5)
  expected = tf.math.l2_normalize(networks.projector(expected_features, training=False), axis=1).numpy()
  np.testing.assert_allclose(projections, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(projections, axis=1), 1.0, atol=1e-5)


def test_embed_of_other_weights_gives_other_features(networks):
  weights = tf.nest.map_structure(lambda v: v.numpy(), networks.model_weights())
  shifted = tf.nest.map_structure(lambda w: w + 0.1, weights)
  images = np.random.default_rng(1).uniform(size=(3, *SHAPE)).astype(np.float32)
  assert not np.allclose(
      embed(weights, images, encoder='small_cnn', projection_dim=PROJECTION_DIM)[0],
      embed(shifted, images, encoder='small_cnn', projection_dim=PROJECTION_DIM)[0],
  )


def test_view_projections_are_two_seeded_views_projected_in_inference_mode(networks):
  weights = tf.nest.map_structure(lambda v: v.numpy(), networks.model_weights())
  images = np.random.default_rng(2).uniform(size=(6, *SHAPE)).astype(np.float32)
  config = orchestra.OrchestraConfig(projection_dim=PROJECTION_DIM, flip=False)
  first, second = view_projections(weights, images, encoder='small_cnn', config=config, seed=3, batch_size=4)
  again = view_projections(weights, images, encoder='small_cnn', config=config, seed=3, batch_size=4)
  assert first.shape == second.shape == (6, PROJECTION_DIM) and not np.allclose(first, second)
  np.testing.assert_array_equal(first, again[0])
  np.testing.assert_allclose(np.linalg.norm(second, axis=1), 1.0, atol=1e-5)
  spec = augment.ORCHESTRA_VIEW_1.adapted(flip=False)
  view = augment.view(tf.constant(images[:4]), tf.constant([3, 0], tf.int64) + [1, 0], spec)
  expected = tf.math.l2_normalize(networks.project(view, training=False), axis=1).numpy()
  np.testing.assert_allclose(first[:4], expected, rtol=1e-4, atol=1e-5)
