"""Client work against its definitions: one step's losses, EMA, the memory bank."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.orchestra import augment
from tff_orchestra.orchestra import batches
from tff_orchestra.orchestra import client_work as cw
from tff_orchestra.orchestra import learner
from tff_orchestra.orchestra.model import OrchestraNetworks, small_cnn

SHAPE = (8, 8, 1)
CONFIG = cw.OrchestraConfig(
    num_global_clusters=8, num_local_clusters=4, memory_size=32, projection_dim=16, local_epochs=1,
    global_clustering_steps=20,
)


def _networks_with(weights):
  networks = OrchestraNetworks(small_cnn, SHAPE, CONFIG.projection_dim)
  tf.nest.map_structure(lambda v, w: v.assign(w), networks.model_weights(), weights)
  return networks


@tff.tensorflow.computation()
def _initial_weights():
  tf.random.set_seed(3)
  networks = OrchestraNetworks(small_cnn, SHAPE, CONFIG.projection_dim)
  networks.copy_online_to_target()
  return tf.nest.map_structure(tf.identity, networks.model_weights())


@pytest.fixture(scope='module')
def initial_weights():
  return _initial_weights()


@pytest.fixture(scope='module')
def client_update():
  weights_type = _initial_weights.type_signature.result
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=CONFIG.client_learning_rate, momentum=0.9)
  return cw.build_client_update(CONFIG, small_cnn, SHAPE, optimizer, weights_type)


def test_one_client_step_loss_equals_the_formula(client_update, initial_weights):
  images = np.random.default_rng(0).uniform(size=(16, *SHAPE)).astype(np.float32)
  centroids = tf.math.l2_normalize(tf.random.stateless_normal([8, 16], seed=[1, 1]), axis=1).numpy()
  round_seed = np.array([0, 1], np.int64)
  result, local, metrics, _ = client_update(
      initial_weights, [images], centroids, False, round_seed
  )
  assert metrics['batches'] == 1.0 and metrics['examples'] == 16.0

  # The same step, written out: EMA first (target == online: no change), then the views.
  networks = _networks_with(initial_weights)
  seed = cw.client_seed(tf.constant(round_seed), tf.data.Dataset.from_tensors(images))
  order = batches.epoch_orders(16, CONFIG.batch_size, 1, seed + [1, 1])  # the client's shuffle of epoch 1
  assert sorted(order.numpy()[0]) == list(range(16))
  view1, view2, view3, rotations = augment.three_views(tf.gather(images, order[0]), seed + [1, 0])
  cw.ema_update(networks.ema_pairs, CONFIG.ema_decay)
  target = networks.target_projection(view1).numpy()
  online = networks.online_projection(view2).numpy()
  online /= np.linalg.norm(online, axis=1, keepdims=True)
  logits_p = online @ centroids.T / CONFIG.temperature
  log_p = logits_p - np.log(np.exp(logits_p).sum(axis=1, keepdims=True))
  logits_q = target @ centroids.T / CONFIG.temperature
  q = np.exp(logits_q) / np.exp(logits_q).sum(axis=1, keepdims=True)
  expected_cluster = -np.mean(np.sum(q * log_p, axis=1))
  head = networks.degeneracy_head(networks.online_projection(view3)).numpy()
  log_softmax = head - np.log(np.exp(head).sum(axis=1, keepdims=True))
  expected_degeneracy = -np.mean(log_softmax[np.arange(16), rotations.numpy()])
  assert metrics['cluster_loss_sum'] == pytest.approx(expected_cluster, rel=1e-4)
  assert metrics['degeneracy_loss_sum'] == pytest.approx(expected_degeneracy, rel=1e-4)
  # Every part of the model moved: online by SGD, target by EMA, BN statistics by forward passes.
  update = result.update
  assert all(np.any(u != 0) for u in update.trainable)
  assert np.any([np.any(u != 0) for u in update.non_trainable])
  assert local['valid'] == 1.0
  np.testing.assert_allclose(np.linalg.norm(local['centroids'], axis=1), 1.0, atol=1e-5)


def test_initialisation_round_trains_nothing_and_fills_the_bank(client_update, initial_weights):
  images = np.random.default_rng(1).uniform(size=(40, *SHAPE)).astype(np.float32)
  centroids = np.zeros((8, 16), np.float32)
  result, local, metrics, _ = client_update(
      initial_weights, [images[:16], images[16:32], images[32:]], centroids, True, np.array([0, 0], np.int64)
  )
  assert metrics['batches'] == 0.0 and metrics['examples'] == 32.0  # two full batches of 16; 8 dropped
  for part in (result.update.trainable, result.update.non_trainable):
    for array in part:
      np.testing.assert_array_equal(array, 0.0)
  assert local['valid'] == 1.0
  np.testing.assert_allclose(np.linalg.norm(local['centroids'], axis=1), 1.0, atol=1e-5)
  assert result.update_weight == 32.0


def test_a_client_without_a_full_batch_trains_nothing_and_counts_as_empty(client_update, initial_weights):
  images = np.random.default_rng(1).uniform(size=(CONFIG.batch_size - 1, *SHAPE)).astype(np.float32)
  result, local, metrics, _ = client_update(
      initial_weights, [images], np.zeros((8, 16), np.float32), False, np.array([0, 2], np.int64)
  )
  assert result.update_weight == 0.0 and metrics['batches'] == 0.0 and metrics['empty_clients'] == 1.0


def test_empty_client_sends_zero_weight_and_invalid_centroids(client_update, initial_weights):
  result, local, metrics, _ = client_update(
      initial_weights, [], np.zeros((8, 16), np.float32), False, np.array([0, 2], np.int64)
  )
  assert result.update_weight == 0.0 and local['valid'] == 0.0 and metrics['batches'] == 0.0


def test_ema_update():
  target, online = tf.Variable([1.0, 2.0]), tf.Variable([3.0, -2.0])
  cw.ema_update([(target, online)], 0.75)
  np.testing.assert_allclose(target.numpy(), [0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2])
  np.testing.assert_allclose(online.numpy(), [3.0, -2.0])


def test_memory_bank_is_fifo():
  bank, filled = tf.zeros([4, 2]), tf.constant(0)
  bank, filled = cw.push_to_memory(bank, filled, tf.constant([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
  assert filled.numpy() == 3
  bank, filled = cw.push_to_memory(bank, filled, tf.constant([[4.0, 4.0], [5.0, 5.0]]))
  assert filled.numpy() == 4
  np.testing.assert_array_equal(bank.numpy()[:, 0], [2.0, 3.0, 4.0, 5.0])


def test_cluster_loss_is_cross_entropy_against_target_assignments():
  centroids = tf.eye(3)
  target = tf.constant([[1.0, 0.0, 0.0]])
  loss_aligned = cw.cluster_loss(tf.constant([[5.0, 0.0, 0.0]]), target, centroids, 0.1).numpy()
  loss_opposed = cw.cluster_loss(tf.constant([[0.0, 5.0, 0.0]]), target, centroids, 0.1).numpy()
  assert loss_aligned < loss_opposed


def _client_args(initial_weights):
  images = np.random.default_rng(4).uniform(size=(40, *SHAPE)).astype(np.float32)
  centroids = tf.math.l2_normalize(tf.random.stateless_normal([8, 16], seed=[2, 2]), axis=1).numpy()
  return initial_weights, images, centroids, np.array([0, 2], np.int64)


def test_local_training_outside_tff_equals_the_client_computation(client_update, initial_weights):
  """The benchmarks' plain-TF floor runs exactly the client's work."""
  weights, images, centroids, round_seed = _client_args(initial_weights)
  in_tff = client_update(weights, [images[:16], images[16:32], images[32:]], centroids, False, round_seed)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=CONFIG.client_learning_rate, momentum=0.9)
  local_training = cw.LocalTraining(CONFIG, small_cnn, SHAPE, optimizer)
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(16)
  plain = local_training(
      tf.nest.map_structure(tf.convert_to_tensor, weights), dataset, tf.constant(centroids), tf.constant(False),
      tf.constant(round_seed),
  )
  # The worker and this process add up in their own thread orders: the loss sums of three steps
  # differed by 1.6e-4 (relative) in one full-suite run; a real mismatch (seed, step) is far larger.
  for name in ('cluster_loss_sum', 'degeneracy_loss_sum', 'batches', 'examples'):
    assert plain[2][name].numpy() == pytest.approx(in_tff[2][name], rel=1e-3), name
  np.testing.assert_allclose(plain[1]['centroids'].numpy(), in_tff[1]['centroids'], atol=1e-4)
  for ours, theirs in zip(tf.nest.flatten(plain[0].update), tf.nest.flatten(in_tff[0].update)):
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


def test_local_training_has_no_dataset_reduce():
  """`for x in dataset` (dataset.reduce) re-instantiates the training step on every call."""
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.01)
  local_training = cw.LocalTraining(CONFIG, small_cnn, SHAPE, optimizer)
  specs = (
      tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), local_training.model_weights),
      tf.data.DatasetSpec(tf.TensorSpec([None, *SHAPE], tf.float32)),
      tf.TensorSpec([8, 16], tf.float32), tf.TensorSpec([], tf.bool), tf.TensorSpec([2], tf.int64),
  )
  graph = local_training.__call__.get_concrete_function(*specs).graph.as_graph_def()
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops.update(node.op for node in function.node_def)
  assert 'AnonymousIteratorV3' in ops or 'AnonymousIteratorV2' in ops
  assert not any(op.startswith('ReduceDataset') for op in ops)


def _local_training_round(config, weights, images, centroids, round_seed):
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=config.client_learning_rate, momentum=0.9)
  local_training = cw.LocalTraining(config, small_cnn, SHAPE, optimizer)
  dataset = tf.data.Dataset.from_tensor_slices(images).batch(16)
  return local_training(tf.nest.map_structure(tf.convert_to_tensor, weights), dataset, tf.constant(centroids),
                        tf.constant(False), tf.constant(round_seed))


def test_xla_compiled_step_gives_the_same_losses_in_plain_tensorflow(initial_weights):
  """`jit_compile=True` compiles the learning step with XLA (its numbers move in the last digits), to the same losses."""
  weights, images, centroids, round_seed = _client_args(initial_weights)
  plain = _local_training_round(CONFIG, weights, images, centroids, round_seed)
  with_xla = _local_training_round(dataclasses.replace(CONFIG, jit_compile=True), weights, images, centroids, round_seed)
  for name in ('cluster_loss_sum', 'degeneracy_loss_sum'):
    assert with_xla[2][name].numpy() == pytest.approx(plain[2][name].numpy(), rel=1e-3), name
  updates = list(zip(tf.nest.flatten(with_xla[0].update), tf.nest.flatten(plain[0].update)))
  for ours, theirs in updates:
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)
  assert any(np.any(ours.numpy() != theirs.numpy()) for ours, theirs in updates), 'XLA did not run'


def test_tffs_worker_does_not_compile_the_step_so_the_learner_refuses_it(client_update, initial_weights):
  """TFF 0.87's worker runs a step marked for XLA as a plain one (bitwise the same update), hence the refusal."""
  config = dataclasses.replace(CONFIG, jit_compile=True)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=config.client_learning_rate, momentum=0.9)
  marked = cw.build_client_update(config, small_cnn, SHAPE, optimizer, _initial_weights.type_signature.result)
  assert b'_XlaMustCompile' in tff.framework.serialize_computation(marked).tensorflow.graph_def.value
  weights, images, centroids, round_seed = _client_args(initial_weights)
  args = (weights, [images[:16], images[16:32], images[32:]], centroids, False, round_seed)
  for ours, theirs in zip(tf.nest.flatten(marked(*args)[0].update), tf.nest.flatten(client_update(*args)[0].update)):
    np.testing.assert_array_equal(ours, theirs)
  with pytest.raises(NotImplementedError, match='jit_compile'):
    learner.check_learner_inputs(SHAPE, small_cnn, config, None, tff.learning.ClientWeighting.NUM_EXAMPLES, None)
