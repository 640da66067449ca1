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

import functools
import math

import numpy as np
import tensorflow as tf

MAX_VARIANCE = 2**22
_RANGE = 2**62  # uniform int64 draws are in [0, 2**62): 64 random bits modulo a power of two.
_PRODUCT_LIMIT = 2**31  # |x| * t stays below this, so (|x| * t - variance)**2 fits int64.
_SPARE_CANDIDATES = 4.0  # a pass proposes this many standard deviations more candidates than it expects to need


def max_magnitude(variance: int) -> int:
  """The largest |x| the sampler proposes for `variance` (module docstring: at least 500 standard deviations)."""
  return (_PRODUCT_LIMIT - 1) // _laplace_scale(variance)


def _laplace_scale(variance: int) -> int:
  """t = floor(sigma) + 1, the discrete Laplace scale of the proposal (CKS 2020, Algorithm 3)."""
  return math.isqrt(variance) + 1


def fold_seed(seed: tf.Tensor, data) -> tf.Tensor:
  """A seed for draw `data` under `seed`."""
  return tf.cast(tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int64)), tf.int64)


def _words_below(shape, limit: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Uniform int64 words in [0, limit): 62 random bits each, redrawn where they reach `limit` (scalar or per element)."""

  def draw(attempt):
    return tf.random.stateless_uniform(shape, fold_seed(seed, attempt), 0, _RANGE, dtype=tf.int64)

  _, words = tf.while_loop(
      lambda attempt, words: tf.reduce_any(words >= limit),
      lambda attempt, words: (attempt + 1, tf.where(words >= limit, draw(attempt + 1), words)),
      (tf.constant(0, tf.int64), draw(0)),
  )
  return words


def uniform_below(m: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One uniform integer in [0, m[i]) for each int64 `m[i]` in [1, 2**62], by rejection (no modulo bias).

  A word below the largest multiple of m, `bucket * m` (`bucket = 2**62 // m`),
  is uniform there, so `word // bucket` is uniform in [0, m).
  """
  m = tf.convert_to_tensor(m, tf.int64)
  bucket = _RANGE // m
  return _words_below(tf.shape(m), bucket * m, seed) // bucket


def bernoulli(numerator: tf.Tensor, denominator, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(numerator / denominator) per element of `numerator`, exactly (0 <= numerator <= denominator).

  `uniform_below(denominator) < numerator` without the division: the word is
  below `numerator * bucket`.
  """
  numerator = tf.convert_to_tensor(numerator, tf.int64)
  bucket = _RANGE // denominator
  return _words_below(tf.shape(numerator), bucket * denominator, seed) < numerator * bucket


def _bernoulli_exp_at_most_one(numerator: tf.Tensor, denominator, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(exp(-numerator / denominator)) for ratios in [0, 1] (CKS 2020, Algorithm 1).

  k counts up while Bernoulli(gamma / k) succeeds; the result is whether k
  stopped odd. Every element still counting is at the same k, so a pass
  draws only for those (`denominator` is a scalar).
  """
  if not 0 < denominator <= _RANGE:
    raise ValueError(f'denominator must be in [1, 2**62], got {denominator}')
  going = bernoulli(numerator, denominator, fold_seed(seed, 1))
  odd = tf.logical_not(going)  # stopped at k = 1
  counting = tf.cast(tf.where(going)[:, 0], tf.int64)

  def step(odd, counting, numerators, k):
    with tf.control_dependencies([tf.debugging.assert_less_equal(
        tf.constant(denominator, tf.int64), _RANGE // k, message='sampler overflow: denominator * k above 2**62')]):
      going = bernoulli(numerators, denominator * k, fold_seed(seed, k))
    stopped = tf.boolean_mask(counting, tf.logical_not(going))
    odd = tf.tensor_scatter_nd_update(odd, stopped[:, tf.newaxis], tf.fill(tf.shape(stopped), tf.equal(k % 2, 1)))
    return odd, tf.boolean_mask(counting, going), tf.boolean_mask(numerators, going), k + 1

  odd, _, _, _ = tf.while_loop(
      lambda odd, counting, numerators, k: tf.size(counting) > 0,
      step,
      [odd, counting, tf.gather(numerator, counting), tf.constant(2, tf.int64)],
      shape_invariants=[odd.shape, tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])],
  )
  return odd


def _successes_of_exp_minus_one(limit: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Per element, successes of Bernoulli(exp(-1)) before the first failure, counting at most `limit[i]` of them.

  Each trial is Algorithm 1 at gamma = 1: k counts up from 2 (Bernoulli(1/1)
  always succeeds) while Bernoulli(1/k) succeeds, and the trial succeeds if k
  stopped odd. The trials of all elements run in one loop, one draw per
  element still counting per pass.
  """
  count = tf.zeros_like(limit)
  counting = tf.cast(tf.where(limit > 0)[:, 0], tf.int64)

  def step(count, counting, successes, k, passes):
    bucket = _RANGE // k  # Bernoulli(1/k): a word below `bucket * k` falls below `bucket` with probability 1/k.
    goes_on = _words_below(tf.shape(k), bucket * k, fold_seed(seed, passes)) < bucket
    successes = successes + tf.cast(tf.logical_and(tf.logical_not(goes_on), tf.equal(k % 2, 1)), tf.int64)
    trial_failed = tf.logical_and(tf.logical_not(goes_on), tf.equal(k % 2, 0))
    finished = tf.logical_or(trial_failed, successes >= tf.gather(limit, counting))
    done = tf.boolean_mask(counting, finished)
    count = tf.tensor_scatter_nd_update(count, done[:, tf.newaxis], tf.boolean_mask(successes, finished))
    k = tf.where(goes_on, k + 1, 2)
    carry_on = tf.logical_not(finished)
    return (count, tf.boolean_mask(counting, carry_on), tf.boolean_mask(successes, carry_on),
            tf.boolean_mask(k, carry_on), passes + 1)

  count, _, _, _, _ = tf.while_loop(
      lambda count, counting, successes, k, passes: tf.size(counting) > 0,
      step,
      [count, counting, tf.zeros_like(counting), tf.fill(tf.shape(counting), tf.constant(2, tf.int64)),
       tf.constant(0, tf.int64)],
      shape_invariants=[count.shape, tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([None]),
                        tf.TensorShape([])],
  )
  return count


def bernoulli_exp(numerator: tf.Tensor, denominator: int, seed: tf.Tensor) -> tf.Tensor:
  """Bernoulli(exp(-numerator / denominator)) per element, for any ratio >= 0 (CKS 2020, Algorithm 2).

  The integer part g needs g successes of Bernoulli(exp(-1)), the fractional
  part one draw of Algorithm 1; the two are independent.
  """
  numerator = tf.convert_to_tensor(numerator, tf.int64)
  whole, fraction = numerator // denominator, numerator % denominator
  whole_seed, fraction_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  fraction_passed = _bernoulli_exp_at_most_one(fraction, denominator, fraction_seed)
  # The integer part is drawn only where the fraction passed (elsewhere the result is False either way).
  successes = _successes_of_exp_minus_one(tf.where(fraction_passed, whole, 0), whole_seed)
  return tf.logical_and(fraction_passed, tf.equal(successes, whole))


@functools.lru_cache(maxsize=None)
def acceptance_probability(variance: int) -> float:
  """The chance that one candidate of Algorithm 3 is accepted (sets how many a pass proposes; not used for privacy).

  A candidate passes the discrete Laplace's rejection with probability
  (1 - e**-1) / (t (1 - e**(-1/t))), its magnitude x is then geometric with
  ratio e**(-1/t), the sign rejects half of x = 0, and the last step accepts
  with probability exp(-(x - variance / t)**2 / (2 * variance)).
  """
  t = _laplace_scale(variance)
  laplace_pass = (1.0 - math.exp(-1.0)) / (t * -math.expm1(-1.0 / t))
  x = np.arange(0, min(max_magnitude(variance), 80 * t) + 1, dtype=np.float64)
  magnitude = -math.expm1(-1.0 / t) * np.exp(-x / t)
  sign = np.where(x == 0, 0.5, 1.0)
  accept = np.exp(-((x - variance / t) ** 2) / (2.0 * variance))
  return float(laplace_pass * np.sum(magnitude * sign * accept))


def _accepted_candidates(count: tf.Tensor, variance: int, seed: tf.Tensor) -> tf.Tensor:
  """The accepted ones, in order, of `count` independent candidates of CKS 2020, Algorithm 3.

  Each rejection step keeps only the candidates that passed it, so the later,
  costlier steps run on fewer.
  """
  t = _laplace_scale(variance)
  uniform_seed, laplace_seed, geometric_seed, accept_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  # One uniform word gives both u in [0, t) and the sign bit.
  drawn = uniform_below(tf.fill([count], tf.constant(2 * t, tf.int64)), uniform_seed)
  u, negative = drawn // 2, tf.equal(drawn % 2, 1)
  laplace_pass = _bernoulli_exp_at_most_one(u, t, laplace_seed)  # Bernoulli(exp(-u / t))
  u, negative = tf.boolean_mask(u, laplace_pass), tf.boolean_mask(negative, laplace_pass)
  no_limit = tf.fill(tf.shape(u), tf.constant(_RANGE, tf.int64))
  magnitude = u + t * _successes_of_exp_minus_one(no_limit, geometric_seed)
  # -0 would count zero twice; magnitudes beyond the range are dropped (module docstring).
  kept = tf.logical_and(tf.logical_not(tf.logical_and(negative, tf.equal(magnitude, 0))),
                        magnitude <= max_magnitude(variance))
  magnitude, negative = tf.boolean_mask(magnitude, kept), tf.boolean_mask(negative, kept)
  distance = magnitude * t - variance  # t * (|y| - variance / t)
  accept = bernoulli_exp(distance * distance, 2 * variance * t * t, accept_seed)
  return tf.boolean_mask(tf.where(negative, -magnitude, magnitude), accept)


def sample_discrete_gaussian(variance: int, size, seed: tf.Tensor) -> tf.Tensor:
  """`size` independent draws of N_Z(0, variance) as int64 (module docstring), for an integer variance >= 0.

  `seed`: a [2] int64 tensor; the draws are a function of it (pass a fresh
  one, e.g. from `fresh_seed()`, for fresh noise).

  CKS 2020, Algorithm 3: propose from the discrete Laplace of scale
  t = floor(sigma) + 1 (itself by rejection, Algorithm 2), accept with
  probability exp(-(|y| - variance / t)**2 / (2 * variance)). A pass proposes
  enough independent candidates to cover the draws still missing with a few
  standard deviations to spare, and keeps the first accepted ones: the
  accepted candidates of a rejection sampler, in order, are independent draws
  of its target, so taking the first `size` of them is exact.
  """
  if not isinstance(variance, int) or isinstance(variance, bool) or not 0 <= variance <= MAX_VARIANCE:
    raise ValueError(f'variance must be an integer in [0, {MAX_VARIANCE}], got {variance!r}')
  size = tf.cast(size, tf.int64)
  if variance == 0:
    return tf.zeros([size], tf.int64)
  rate = acceptance_probability(variance)

  def step(drawn, have, passes):
    missing = size - have
    expected = tf.cast(missing, tf.float64) / rate
    count = tf.cast(tf.math.ceil(expected + _SPARE_CANDIDATES * tf.sqrt(expected)), tf.int64) + 16
    accepted = _accepted_candidates(count, variance, fold_seed(seed, passes))[:missing]
    taken = tf.size(accepted, out_type=tf.int64)
    # The result has its final size from the start (no loop variable changes shape): this pass fills its next slots.
    drawn = tf.tensor_scatter_nd_update(drawn, tf.range(have, have + taken)[:, tf.newaxis], accepted)
    return drawn, have + taken, passes + 1

  drawn, _, _ = tf.while_loop(
      lambda drawn, have, passes: have < size,
      step,
      [tf.zeros([size], tf.int64), tf.constant(0, tf.int64), tf.constant(0, tf.int64)],
  )
  return drawn


def fresh_seed() -> tf.Tensor:
  """A [2] int64 seed from TF's stateful generator: OS entropy, unless the program set a global seed."""
  return tf.random.uniform([2], 0, _RANGE, dtype=tf.int64)
