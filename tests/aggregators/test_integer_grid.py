"""Values as integer vectors: clipping, the rounding's norm bound holds exactly; flattening round-trips."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.aggregators import integer_grid


def test_conditional_rounding_meets_its_bound_exactly():
  x = tf.constant(np.full(64, 0.5), tf.float64)  # norm 4; rounded, up to 8
  seed = tf.constant([1, 2], tf.int64)
  rounded = integer_grid.conditional_round(x, 20, seed).numpy()
  assert np.sum(rounded**2) <= 20 and set(np.unique(rounded)) <= {0, 1}
  # An unreachable bound: after every attempt fails, the zero vector (which meets it) is sent.
  impossible = integer_grid.conditional_round(tf.constant(np.full(64, 0.9), tf.float64), 1, seed).numpy()
  np.testing.assert_array_equal(impossible, 0)


def test_flatten_and_unflatten_round_trip_a_structure():
  value_type = tff.to_type(((np.float32, (2, 3)), np.float64))
  specs = tff.types.type_to_tf_tensor_specs(value_type)
  value = (tf.reshape(tf.range(6, dtype=tf.float32), (2, 3)), tf.constant(7.0, tf.float64))
  flat = integer_grid.flatten(value, 8)
  np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 7, 0])
  back = integer_grid.unflatten(flat, specs)
  np.testing.assert_array_equal(back[0], value[0])
  assert back[1].dtype == tf.float64 and back[1].numpy() == 7.0
  assert integer_grid.size_of(value_type) == 7


def test_l2_clip_scales_only_what_exceeds_the_clip():
  long, short = tf.constant([3.0, 4.0], tf.float64), tf.constant([0.3, 0.4], tf.float64)
  clipped, norm = integer_grid.l2_clip(long, 1.0)
  np.testing.assert_allclose(clipped, [0.6, 0.8])
  np.testing.assert_allclose(norm, 5.0)
  kept, norm = integer_grid.l2_clip(short, np.float32(1.0))
  np.testing.assert_array_equal(kept, short)
  np.testing.assert_allclose(norm, 0.5)
