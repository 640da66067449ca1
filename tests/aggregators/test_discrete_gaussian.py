"""The exact discrete Gaussian sampler: its distribution, and the exactness of its parts."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from scipy import stats

from tff_orchestra.aggregators import discrete_gaussian as dg


SEED = tf.constant([2026, 1203], tf.int64)


def _discrete_gaussian_pmf(variance: int, support: np.ndarray) -> np.ndarray:
  sigma = math.sqrt(variance)
  wide = np.arange(-int(40 * sigma) - 10, int(40 * sigma) + 11)
  normaliser = np.exp(-(wide.astype(np.float64) ** 2) / (2 * variance)).sum()
  return np.exp(-(support.astype(np.float64) ** 2) / (2 * variance)) / normaliser


@pytest.mark.parametrize('variance', [1, 4, 30])
def test_draws_follow_the_discrete_gaussian(variance):
  """Chi-square against the exact pmf; a continuous Gaussian rounded to integers fails it at variance 1."""
  draws = tf.function(lambda: dg.sample_discrete_gaussian(variance, 100_000, SEED))().numpy()
  assert draws.dtype == np.int64
  support = np.arange(-int(4 * math.sqrt(variance)), int(4 * math.sqrt(variance)) + 1)
  expected = _discrete_gaussian_pmf(variance, support) * draws.size
  observed = np.array([(draws == x).sum() for x in support])
  tails = draws.size - observed.sum(), draws.size - expected.sum()
  _, p_value = stats.chisquare(np.append(observed, tails[0]), np.append(expected, tails[1]))
  assert p_value > 1e-4


def test_rounded_continuous_gaussian_would_fail_the_same_test():
  """The test above can fail: the nearest integer to N(0, 1) has a measurably different pmf."""
  rng = np.random.default_rng(0)
  draws = np.rint(rng.normal(0.0, 1.0, 100_000)).astype(np.int64)
  support = np.arange(-4, 5)
  expected = _discrete_gaussian_pmf(1, support) * draws.size
  observed = np.array([(draws == x).sum() for x in support])
  _, p_value = stats.chisquare(np.append(observed, draws.size - observed.sum()),
                               np.append(expected, draws.size - expected.sum()))
  assert p_value < 1e-6


def test_largest_variance_follows_the_discrete_gaussian():
  """Chi-square over 40 bins of equal probability under the exact pmf, at the largest variance."""
  draws = tf.function(lambda: dg.sample_discrete_gaussian(dg.MAX_VARIANCE, 200_000, SEED))().numpy()
  sigma = math.sqrt(dg.MAX_VARIANCE)
  support = np.arange(-int(12 * sigma), int(12 * sigma) + 1)
  cdf = np.cumsum(_discrete_gaussian_pmf(dg.MAX_VARIANCE, support))
  edges = support[np.searchsorted(cdf, np.linspace(0, 1, 41)[1:-1])]  # bin i holds x <= edges[i]
  observed = np.bincount(np.searchsorted(edges, draws, side='left'), minlength=40)
  expected = np.diff(np.concatenate([[0.0], cdf[np.searchsorted(support, edges)], [1.0]])) * draws.size
  _, p_value = stats.chisquare(observed, expected * observed.sum() / expected.sum())
  assert p_value > 1e-4
  assert dg.max_magnitude(dg.MAX_VARIANCE) >= 500 * sigma


@pytest.mark.parametrize('variance', [1, 30, dg.MAX_VARIANCE])
def test_acceptance_probability_is_the_rate_a_pass_sees(variance):
  """The rate that sets how many candidates a pass proposes (speed only: a wrong rate costs passes, not exactness)."""
  n = 100_000
  accepted = tf.function(lambda: dg._accepted_candidates(tf.constant(n, tf.int64), variance, SEED))().numpy()
  rate = dg.acceptance_probability(variance)
  assert abs(accepted.size / n - rate) < 5 * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize('numerator, denominator', [(1, 1), (7, 2), (1, 4), (0, 3)])
def test_bernoulli_exp_has_the_exact_frequency(numerator, denominator):
  n = 200_000
  draws = tf.function(
      lambda: dg.bernoulli_exp(tf.fill([n], tf.constant(numerator, tf.int64)), denominator, SEED)
  )().numpy()
  p = math.exp(-numerator / denominator)
  assert abs(draws.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


def test_uniform_below_has_no_modulo_bias():
  """For m = 3 * 2**60, reducing 62 random bits modulo m would put half the draws below 2**60, not a third."""
  m = 3 * 2**60
  draws = dg.uniform_below(tf.fill([60_000], tf.constant(m, tf.int64)), SEED).numpy()
  assert draws.min() >= 0 and draws.max() < m
  assert abs(np.mean(draws < 2**60) - 1 / 3) < 0.01


@pytest.mark.parametrize('variance', [-1, 2**22 + 1, 2.5, True])
def test_refuses_a_variance_it_cannot_sample_exactly(variance):
  with pytest.raises(ValueError, match='variance'):
    dg.sample_discrete_gaussian(variance, 10, SEED)


def test_draws_inside_a_tff_computation_follow_the_discrete_gaussian():
  """Where the clients run it: a serialized graph, its loops graphs of their own, seeded by `fresh_seed`."""
  draw = tff.tensorflow.computation(lambda: dg.sample_discrete_gaussian(1, 100_000, dg.fresh_seed()))
  first, second = draw(), draw()
  assert np.mean(first == second) < 0.5  # fresh noise on every call
  support = np.arange(-4, 5)
  expected = _discrete_gaussian_pmf(1, support) * first.size
  observed = np.array([(first == x).sum() for x in support])
  _, p_value = stats.chisquare(np.append(observed, first.size - observed.sum()),
                               np.append(expected, first.size - expected.sum()))
  assert p_value > 1e-4
