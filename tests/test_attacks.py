"""Attacks: each changes only the attackers' rows, in the way its docstring says."""

import numpy as np
import pytest

from tff_orchestra import attacks

UPDATES = np.random.default_rng(0).normal(size=(10, 6))
MALICIOUS = attacks.malicious_clients(10, 0.3, seed=1)


def test_malicious_clients_are_the_rounded_fraction_and_seeded():
  assert MALICIOUS.sum() == 3
  np.testing.assert_array_equal(MALICIOUS, attacks.malicious_clients(10, 0.3, seed=1))
  assert attacks.malicious_clients(10, 0.0, seed=1).sum() == 0


@pytest.mark.parametrize('name', sorted(attacks.UPDATE_ATTACKS))
def test_honest_rows_are_untouched_and_the_input_is_not_changed(name):
  before = UPDATES.copy()
  attacked = attacks.UPDATE_ATTACKS[name]()(UPDATES, MALICIOUS, np.random.default_rng(2))
  np.testing.assert_array_equal(attacked[~MALICIOUS], UPDATES[~MALICIOUS])
  assert not np.allclose(attacked[MALICIOUS], UPDATES[MALICIOUS])
  np.testing.assert_array_equal(UPDATES, before)


def test_sign_flip_and_scaling_multiply_the_attackers_own_updates():
  rng = np.random.default_rng(0)
  np.testing.assert_allclose(attacks.sign_flip(5.0)(UPDATES, MALICIOUS, rng)[MALICIOUS], -5 * UPDATES[MALICIOUS])
  np.testing.assert_allclose(attacks.scaling(10.0)(UPDATES, MALICIOUS, rng)[MALICIOUS], 10 * UPDATES[MALICIOUS])


def test_gaussian_updates_have_the_stated_norm():
  attacked = attacks.gaussian(3.0)(UPDATES, MALICIOUS, np.random.default_rng(0))
  honest_norm = np.linalg.norm(UPDATES[~MALICIOUS], axis=1).mean()
  np.testing.assert_allclose(np.linalg.norm(attacked[MALICIOUS], axis=1), 3 * honest_norm)


def test_alie_sends_mean_minus_z_std_with_the_papers_z():
  # n = 50, f = 12: s = 26 - 12 = 14 clients to win over, z = Phi^-1(36/50).
  assert attacks.alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)
  attacked = attacks.alie()(UPDATES, MALICIOUS, np.random.default_rng(0))
  honest = UPDATES[~MALICIOUS]
  expected = honest.mean(0) - attacks.alie_z(10, 3) * honest.std(0)
  np.testing.assert_allclose(attacked[MALICIOUS], np.tile(expected, (3, 1)))


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
  attacked = attacks.ipm(0.5)(UPDATES, MALICIOUS, np.random.default_rng(0))
  np.testing.assert_allclose(attacked[MALICIOUS], np.tile(-0.5 * UPDATES[~MALICIOUS].mean(0), (3, 1)))


def test_flip_labels_reverses_the_classes():
  np.testing.assert_array_equal(attacks.flip_labels(np.array([0, 3, 9]), 10), [9, 6, 0])
  with pytest.raises(ValueError, match='num_classes'):
    attacks.flip_labels(np.array([10]), 10)


def test_bad_input_names_the_argument():
  with pytest.raises(ValueError, match='scale'):
    attacks.sign_flip(0.0)
  with pytest.raises(ValueError, match='malicious'):
    attacks.ipm()(UPDATES, MALICIOUS[:3], np.random.default_rng(0))
  with pytest.raises(ValueError, match='every client is malicious'):
    attacks.ipm()(UPDATES, np.ones(10, bool), np.random.default_rng(0))
