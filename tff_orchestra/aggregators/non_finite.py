"""Non-finite client values: excluded and counted, the same way by every factory of ours.

A client whose value has a NaN or infinite coordinate, or (in a weighted
factory) whose weight is NaN, infinite or negative, is *excluded*: before
anything else is computed from it, its value becomes zeros and its weight 0.
It then changes neither the result (a weighted mean or a sum without it) nor
the state (adaptive clips and bounds, prototypes), and the factory reports
how many clients it excluded as `non_finite_clients`. This is what TFF's own
learning client work does to a client update (`model_delta_client_work` zeroes
a non-finite delta and its weight); TFF's aggregators do not, and a NaN there
reaches the result.

What "without it" means for an unweighted mean: a sum of ours (used inside
`tff.aggregators.UnweightedMeanFactory`, or `GaussianNoise(output='mean')`,
which divides by the expected number of clients) adds the excluded client's
zeros, so it still counts in the denominator. Weights exclude it exactly.
"""

from __future__ import annotations

import tensorflow as tf


def is_non_finite(value) -> tf.Tensor:
  """True (a bool scalar) if any coordinate of any tensor in `value` is NaN or infinite."""
  leaves = [tf.convert_to_tensor(x) for x in tf.nest.flatten(value)]
  finite = [tf.reduce_all(tf.math.is_finite(x)) for x in leaves if x.dtype.is_floating]
  return tf.logical_not(tf.reduce_all(tf.stack(finite))) if finite else tf.constant(False)


def _zeroed_if(excluded: tf.Tensor, value):
  return tf.nest.map_structure(lambda x: tf.where(excluded, tf.zeros_like(x), x), value)


def exclude_non_finite(value):
  """`(value, excluded)`: zeros and True for a value with a non-finite coordinate, else `(value, False)`."""
  excluded = is_non_finite(value)
  return _zeroed_if(excluded, value), excluded


def exclude_non_finite_weighted(value, weight):
  """`(value, weight, excluded)`: zeros, 0 and True if the value is not finite or the weight is not finite and >= 0."""
  weight = tf.convert_to_tensor(weight)
  bad_weight = weight < 0
  if weight.dtype.is_floating:
    bad_weight = tf.logical_or(bad_weight, tf.logical_not(tf.math.is_finite(weight)))
  excluded = tf.logical_or(is_non_finite(value), bad_weight)
  return _zeroed_if(excluded, value), tf.where(excluded, tf.zeros_like(weight), weight), excluded
