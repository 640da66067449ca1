"""A client's examples gathered, then reshuffled every epoch into full batches."""

import numpy as np
import tensorflow as tf

from tff_orchestra.orchestra import batches


def test_epochs_see_fresh_full_batch_permutations_repeatable_from_the_seed():
  orders = batches.epoch_orders(tf.constant(40), 16, 3, tf.constant([5, 6], tf.int64)).numpy()
  assert orders.shape == (6, 16)  # 3 epochs x 2 full batches (the last 8 examples of each epoch dropped)
  epochs = orders.reshape(3, 32)
  assert all(len(set(epoch)) == 32 for epoch in epochs)  # no example twice in an epoch
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
  np.testing.assert_array_equal(orders, batches.epoch_orders(tf.constant(40), 16, 3, tf.constant([5, 6], tf.int64)))
  examples, finite = batches.gather_examples(tf.data.Dataset.from_tensor_slices(np.arange(10.0)).batch(3))
  np.testing.assert_array_equal(examples, np.arange(10.0))
  assert bool(finite)


def test_an_empty_dataset_gathers_to_no_examples_and_no_batches():
  examples, finite = batches.gather_examples(tf.data.Dataset.from_tensor_slices(np.zeros((0, 2), np.float32)).batch(4))
  assert examples.shape == (0, 2) and bool(finite)
  assert batches.epoch_orders(tf.shape(examples)[0], 4, 2, tf.constant([1, 2], tf.int64)).shape == (0, 4)
  _, finite = batches.gather_examples(tf.data.Dataset.from_tensor_slices([[1.0, np.nan]]).batch(1))
  assert not bool(finite)
