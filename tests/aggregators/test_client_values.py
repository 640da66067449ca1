"""client_values: the per-client collection every robust aggregator builds on, and its helpers."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.aggregators import client_values
from tff_orchestra.aggregators import privacy_check

STRUCT = tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [2, 2]), b=tff.TensorType(np.float64, [3])))


def test_flattening_round_trips_a_structure_in_its_dtypes():
  flat = client_values.Flattening(STRUCT)
  assert flat.dimension == 7 and flat.dtype == np.float64  # any float64 tensor makes the vector float64
  value = collections.OrderedDict(a=np.arange(4, dtype=np.float32).reshape(2, 2), b=np.array([4.0, 5.0, 6.0]))
  vector = flat.flatten(value)
  np.testing.assert_array_equal(vector, np.arange(7))
  back = flat.unflatten(vector)
  np.testing.assert_array_equal(back['a'], value['a'])
  assert back['a'].dtype == tf.float32 and back['b'].dtype == tf.float64


def test_collect_stacks_each_finite_value_in_client_order_and_counts_the_others():
  value_type = tff.TensorType(np.float32, [2])
  flat = client_values.Flattening(value_type)

  @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
  def stacked(value):
    return client_values.collect(value, flat)

  values = [np.array([1, 2], np.float32), np.array([np.inf, 0], np.float32), np.array([3, 4], np.float32)]
  rows, non_finite_clients = stacked(values)
  np.testing.assert_array_equal(rows, [[1, 2], [3, 4]])
  assert non_finite_clients == 1
  assert [c.secure for c in privacy_check.channels(stacked)] == [False]  # every value, in the clear


def test_median_matches_numpy_for_odd_even_and_no_rows():
  rows = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  np.testing.assert_allclose(client_values.median(tf.constant(rows)), np.median(rows, axis=0))
  np.testing.assert_allclose(client_values.median(tf.constant(rows[:4])), np.median(rows[:4], axis=0), rtol=1e-6)
  np.testing.assert_array_equal(client_values.median(tf.zeros([0, 3])), np.zeros(3))


def test_norm_and_scaling_cover_the_whole_structure():
  value = collections.OrderedDict(a=tf.constant([3.0, 0.0]), b=tf.constant([4.0], tf.float64))
  assert float(client_values.l2_norm(value)) == 5.0
  halved = client_values.scaled(value, tf.constant(0.5))
  np.testing.assert_array_equal(halved['a'], [1.5, 0.0])
  assert halved['b'].dtype == tf.float64 and float(halved['b'][0]) == 2.0
