"""Values as integer vectors: flattening, the rounding that bounds their norm, and back.

Shared by the discrete Gaussian factories (`distributed_discrete_gaussian.py`,
`gaussian_noise.py`): a client's value is flattened to one float64
vector, scaled onto the integer grid and rounded by conditional randomized
rounding (Kairouz, Liu and Steinke 2021, Section 4.1), whose squared L2 norm
bound is checked in int64 and so holds exactly: it is the sensitivity the
accounting uses.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.aggregators import discrete_gaussian

ROUNDING_ATTEMPTS = 100
MAX_SQUARED_NORM = 2**62  # the integer vector's squared norm is summed in int64


def size_of(value_type: tff.Type) -> int:
  """The number of coordinates of a value of `value_type`."""
  return sum(int(spec.shape.num_elements()) for spec in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)))


def rounded_squared_norm_bound(norm: float, beta: float, dimension: int) -> float:
  """Squared L2 norm bound after conditional randomized rounding (Kairouz et al. 2021, Theorem 1 / Sec. 4.1)."""
  worst = (norm + math.sqrt(dimension)) ** 2
  if beta == 0.0:
    return worst
  conditional = norm**2 + dimension / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (norm + math.sqrt(dimension) / 2.0)
  return min(worst, conditional)


def flatten(value, length: int) -> tf.Tensor:
  """The value's tensors as one float64 vector, zero-padded to `length`."""
  flat = tf.concat([tf.reshape(tf.cast(x, tf.float64), [-1]) for x in tf.nest.flatten(value)], axis=0)
  return tf.pad(flat, [[0, length - tf.shape(flat)[0]]])


def l2_clip(flat: tf.Tensor, clip) -> tuple[tf.Tensor, tf.Tensor]:
  """(`flat` scaled to L2 norm at most `clip`, its norm before): the clipping both noise factories run (float64)."""
  clip = tf.cast(clip, tf.float64)
  norm = tf.norm(flat)
  return flat * tf.where(norm > clip, clip / norm, tf.constant(1.0, tf.float64)), norm


def unflatten(flat: tf.Tensor, specs):
  """The first coordinates of `flat` as tensors of `specs` (their shapes and dtypes)."""
  leaves, start = [], 0
  for spec in tf.nest.flatten(specs):
    size = int(spec.shape.num_elements())
    leaves.append(tf.cast(tf.reshape(flat[start:start + size], spec.shape), spec.dtype))
    start += size
  return tf.nest.pack_sequence_as(specs, leaves)


def conditional_round(x: tf.Tensor, l2_bound_squared: int, seed: tf.Tensor) -> tf.Tensor:
  """Each coordinate rounded up with probability its fractional part, redrawn until the squared norm is within bound.

  The check is in int64 arithmetic, so the bound holds exactly; after
  `ROUNDING_ATTEMPTS` failures the zero vector is sent (it meets the bound).
  """
  floor = tf.floor(x)
  fraction = x - floor
  floor = tf.cast(floor, tf.int64)
  bound = tf.constant(l2_bound_squared, tf.int64)

  def draw(attempt):
    uniform = tf.random.stateless_uniform(tf.shape(x), discrete_gaussian.fold_seed(seed, attempt), dtype=tf.float64)
    return floor + tf.cast(uniform < fraction, tf.int64)

  def fits(rounded):
    return tf.reduce_sum(rounded * rounded) <= bound

  _, rounded = tf.while_loop(
      lambda attempt, rounded: tf.logical_and(attempt < ROUNDING_ATTEMPTS, tf.logical_not(fits(rounded))),
      lambda attempt, rounded: (attempt + 1, draw(attempt)),
      [tf.constant(1, tf.int64), draw(0)],
  )
  return tf.where(fits(rounded), rounded, tf.zeros_like(rounded))
