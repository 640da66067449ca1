"""Exact sampling of the discrete Gaussian in TensorFlow integer arithmetic.

`sample_discrete_gaussian(variance, size, seed)` draws `size` independent values of
N_Z(0, variance): P(x) proportional to exp(-x**2 / (2 * variance)) on the
integers, for an integer `variance` (Canonne, Kamath and Steinke 2020, "The
discrete Gaussian for differential privacy", Algorithms 1-3). Every step is
integer arithmetic on uniform integers, so the output has the discrete
Gaussian's distribution up to the two bounds below, not a floating-point
approximation of it (tensorflow_privacy's `discrete_gaussian_utils` draws its
Bernoullis from float uniforms: "possibly inexact").

* Uniform integers: `tf.random.stateless_uniform(..., maxval=2**62,
  dtype=tf.int64)` reduces 64 random bits modulo 2**62, which is exact; a
  uniform integer below `m` is then drawn by rejection (no modulo bias). The
  bits come from TF's Philox generator: statistically uniform, not a
  cryptographic generator.
* Seeds: every draw has its own seed, split or folded from `seed` (a [2]
  int64 tensor) by its place in the algorithm and its loop pass. Stateful
  random ops are not used: with a global seed set, TF seeds an op by its index
  in its graph, and ops in different loop bodies (graphs of their own) then
  draw the same numbers; that correlation biased a first version of this
  sampler, measurably.
* Range: the proposal is truncated to |x| <= `max_magnitude(variance)` (at
  least 500 standard deviations) so that no product overflows int64. The
  output is the discrete Gaussian conditioned on that range: its total
  variation distance from the discrete Gaussian is below
  2 * exp(-500**2 / 2) < 1e-54000 per value, which `DistributedDiscreteGaussian`
  adds to delta (it does not change a printed digit).

`variance` is at most `MAX_VARIANCE` (2**22, a standard deviation of 2048):
callers choose their grid so that the noise fits.
"""

from __future__ import annotations

import math

import tensorflow as tf

MAX_VARIANCE = 2**22
_RANGE = 2**62  # uniform int64 draws are in [0, 2**62): 64 random bits modulo a power of two.
_PRODUCT_LIMIT = 2**31  # |x| * t stays below this, so (|x| * t - variance)**2 fits int64.


def max_magnitude(variance: int) -> int:
  """The largest |x| the sampler proposes for `variance` (module docstring: at least 500 standard deviations)."""
  return (_PRODUCT_LIMIT - 1) // _laplace_scale(variance)


def _laplace_scale(variance: int) -> int:
  """t = floor(sigma) + 1, the discrete Laplace scale of the proposal (CKS 2020, Algorithm 3)."""
  return math.isqrt(variance) + 1


def fold_seed(seed: tf.Tensor, data) -> tf.Tensor:
  """A seed for draw `data` under `seed`."""
  return tf.cast(tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64)), tf.int64)


def uniform_below(m: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One uniform integer in [0, m[i]) for each int64 `m[i]` in [1, 2**62], by rejection (no modulo bias)."""
  m = tf.convert_to_tensor(m, tf.int64)
  limit = (_RANGE // m) * m  # the largest multiple of m within range: values at or above it are redrawn.

  def draw(attempt):
    return tf.random.stateless_uniform(tf.shape(m), fold_seed(seed, attempt), 0, _RANGE, dtype=tf.int64)

  _, drawn = tf.while_loop(
      lambda attempt, u: tf.reduce_any(u >= limit),
      lambda attempt, u: (attempt + 1, tf.where(u >= limit, draw(attempt + 1), u)),
      (tf.constant(0, tf.int64), draw(0)),
  )
  return drawn % m


def bernoulli(numerator: tf.Tensor, denominator: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(numerator / denominator) per element, exactly (0 <= numerator <= denominator)."""
  return uniform_below(denominator, seed) < numerator


def _bernoulli_exp_at_most_one(numerator: tf.Tensor, denominator: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(exp(-numerator / denominator)) for ratios in [0, 1] (CKS 2020, Algorithm 1).

  k counts up while Bernoulli(gamma / k) succeeds; the result is whether k is
  odd. Only the elements still counting are drawn in each pass.
  """
  k = tf.ones_like(numerator)
  counting = tf.range(tf.size(numerator, out_type=tf.int64), dtype=tf.int64)

  def step(k, counting):
    k_now = tf.gather(k, counting)
    denominators = tf.gather(denominator, counting) * k_now
    with tf.control_dependencies([
        tf.debugging.assert_less_equal(denominators, tf.constant(_RANGE, tf.int64), message='sampler overflow')
    ]):
      # Every element still counting is at the same k: the pass is its index.
      going = bernoulli(tf.gather(numerator, counting), denominators, fold_seed(seed, k_now[0]))
    counting = tf.boolean_mask(counting, going)
    k = tf.tensor_scatter_nd_add(k, counting[:, tf.newaxis], tf.ones_like(counting))
    return k, counting

  k, _ = tf.while_loop(
      lambda k, counting: tf.size(counting) > 0,
      step,
      [k, counting],
      shape_invariants=[k.shape, tf.TensorShape([None])],
  )
  return tf.equal(k % 2, 1)


def bernoulli_exp(numerator: tf.Tensor, denominator: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(exp(-numerator / denominator)) per element, for any ratio >= 0 (CKS 2020, Algorithm 2).

  The integer part g needs g successes of Bernoulli(exp(-1)) (stopping at the
  first failure), the fractional part one more draw.
  """
  numerator = tf.convert_to_tensor(numerator, tf.int64)
  denominator = tf.convert_to_tensor(denominator, tf.int64)
  whole, fraction = numerator // denominator, numerator % denominator
  whole_seed, fraction_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  alive = tf.ones_like(numerator, tf.bool)
  done = tf.zeros_like(numerator)
  pending = tf.cast(tf.where(whole > 0)[:, 0], tf.int64)

  def step(alive, done, pending, passes):
    ones = tf.ones_like(pending)
    success = _bernoulli_exp_at_most_one(ones, ones, fold_seed(whole_seed, passes))
    failed = tf.boolean_mask(pending, tf.logical_not(success))
    alive = tf.tensor_scatter_nd_update(alive, failed[:, tf.newaxis], tf.zeros_like(failed, tf.bool))
    passed = tf.boolean_mask(pending, success)
    done = tf.tensor_scatter_nd_add(done, passed[:, tf.newaxis], tf.ones_like(passed))
    pending = tf.boolean_mask(passed, tf.gather(done, passed) < tf.gather(whole, passed))
    return alive, done, pending, passes + 1

  alive, _, _, _ = tf.while_loop(
      lambda alive, done, pending, passes: tf.size(pending) > 0,
      step,
      [alive, done, pending, tf.constant(0, tf.int64)],
      shape_invariants=[alive.shape, done.shape, tf.TensorShape([None]), tf.TensorShape([])],
  )
  return tf.logical_and(alive, _bernoulli_exp_at_most_one(fraction, denominator, fraction_seed))


def _geometric_exp_minus_one(size: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Per element, the number of successes of Bernoulli(exp(-1)) before the first failure."""
  count = tf.zeros([size], tf.int64)
  going = tf.range(size, dtype=tf.int64)

  def step(count, going, passes):
    ones = tf.ones_like(going)
    going = tf.boolean_mask(going, _bernoulli_exp_at_most_one(ones, ones, fold_seed(seed, passes)))
    return tf.tensor_scatter_nd_add(count, going[:, tf.newaxis], tf.ones_like(going)), going, passes + 1

  count, _, _ = tf.while_loop(
      lambda count, going, passes: tf.size(going) > 0,
      step,
      [count, going, tf.constant(0, tf.int64)],
      shape_invariants=[count.shape, tf.TensorShape([None]), tf.TensorShape([])],
  )
  return count


def sample_discrete_gaussian(variance: int, size, seed: tf.Tensor) -> tf.Tensor:
  """`size` independent draws of N_Z(0, variance) as int64 (module docstring), for an integer variance >= 0.

  `seed`: a [2] int64 tensor; the draws are a function of it (pass a fresh
  one, e.g. from `fresh_seed()`, for fresh noise).

  CKS 2020, Algorithm 3: propose from the discrete Laplace of scale
  t = floor(sigma) + 1 (itself by rejection, Algorithm 2), accept with
  probability exp(-(|y| - variance / t)**2 / (2 * variance)). Elements are
  drawn together; each pass redraws only those not yet accepted.
  """
  if not isinstance(variance, int) or isinstance(variance, bool) or not 0 <= variance <= MAX_VARIANCE:
    raise ValueError(f'variance must be an integer in [0, {MAX_VARIANCE}], got {variance!r}')
  size = tf.cast(size, tf.int64)
  if variance == 0:
    return tf.zeros([size], tf.int64)
  t = _laplace_scale(variance)
  largest = max_magnitude(variance)
  acceptance_denominator = 2 * variance * t * t

  def step(result, pending, passes):
    n = tf.size(pending, out_type=tf.int64)
    seeds = tf.unstack(tf.random.experimental.stateless_split(fold_seed(seed, passes), 5))
    u = uniform_below(tf.fill([n], tf.constant(t, tf.int64)), seeds[0])
    keep_u = bernoulli_exp(u, tf.fill([n], tf.constant(t, tf.int64)), seeds[1])
    magnitude = u + t * _geometric_exp_minus_one(n, seeds[2])
    negative = bernoulli(tf.ones([n], tf.int64), tf.fill([n], tf.constant(2, tf.int64)), seeds[3])
    laplace_ok = tf.logical_and(keep_u, tf.logical_not(tf.logical_and(negative, tf.equal(magnitude, 0))))
    in_range = magnitude <= largest
    distance = tf.where(in_range, magnitude, 0) * t - variance  # t * (|y| - variance / t)
    accept = tf.logical_and(
        tf.logical_and(laplace_ok, in_range),
        bernoulli_exp(distance * distance, tf.fill([n], tf.constant(acceptance_denominator, tf.int64)), seeds[4]),
    )
    value = tf.where(negative, -magnitude, magnitude)
    accepted = tf.boolean_mask(pending, accept)
    result = tf.tensor_scatter_nd_update(result, accepted[:, tf.newaxis], tf.boolean_mask(value, accept))
    return result, tf.boolean_mask(pending, tf.logical_not(accept)), passes + 1

  result, _, _ = tf.while_loop(
      lambda result, pending, passes: tf.size(pending) > 0,
      step,
      [tf.zeros([size], tf.int64), tf.range(size, dtype=tf.int64), tf.constant(0, tf.int64)],
      shape_invariants=[tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])],
  )
  return result


def fresh_seed() -> tf.Tensor:
  """A [2] int64 seed from TF's stateful generator: OS entropy, unless the program set a global seed."""
  return tf.random.uniform([2], 0, _RANGE, dtype=tf.int64)
