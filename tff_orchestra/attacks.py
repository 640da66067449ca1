"""Attacks on federated aggregation: what malicious clients send, for tests and benchmarks.

A round's client updates are rows of a matrix (each client's update
flattened, `numpy`); `malicious` marks the attackers' rows. An update attack
replaces those rows (`attack(updates, malicious, rng)`); a data attack
(`flip_labels`) changes what the attackers train on, and their rows are then
their honest training on poisoned data. All are seeded and pure.

* `sign_flip` (scale s): each attacker sends `-s` x its own update.
* `gaussian` (norm multiple m): random directions with `m` x the honest mean
  norm (uncoordinated faults).
* `scaling` (boost b): each attacker sends `b` x its own update, which, with
  `flip_labels`, is model replacement (Bagdasaryan et al., 2020).
* `alie` (z): "a little is enough" (Baruch et al., 2019): every attacker
  sends the honest coordinate means minus `z` honest standard deviations,
  with `z` from the number of clients and attackers as in the paper; small
  enough per coordinate to pass median- and distance-based defences.
* `ipm` (epsilon): inner-product manipulation (Xie et al., 2020): every
  attacker sends `-epsilon` x the honest mean.

The last two are omniscient (they use the honest clients' updates of the
round), the strongest setting a defence is evaluated against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np
from scipy import stats

from tff_orchestra._checks import check_number

UpdateAttack = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def malicious_clients(num_clients: int, fraction: float, seed: int) -> np.ndarray:
  """A bool mask of `round(fraction x num_clients)` attackers among `num_clients`, drawn from `seed`."""
  check_number(num_clients, 'num_clients', low=1, integer=True)
  check_number(fraction, 'fraction', low=0.0, high=1.0)
  count = int(round(fraction * num_clients))
  mask = np.zeros(num_clients, bool)
  mask[np.random.default_rng(seed).choice(num_clients, count, replace=False)] = True
  return mask


def flip_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Label flipping: class `c` becomes `num_classes - 1 - c`."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must be in [0, num_classes={num_classes}), got {labels.min()}..{labels.max()}')
  return (num_classes - 1 - labels).astype(labels.dtype)


def _checked(updates: np.ndarray, malicious: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  updates = np.asarray(updates)
  malicious = np.asarray(malicious, bool)
  if updates.ndim != 2 or malicious.shape != (updates.shape[0],):
    raise ValueError(f'updates must be [clients, dimension] and malicious [clients], got {updates.shape} and {malicious.shape}')
  return updates.copy(), malicious


def _honest(updates: np.ndarray, malicious: np.ndarray) -> np.ndarray:
  honest = updates[~malicious]
  if not len(honest):
    raise ValueError('this attack uses the honest clients\' updates, and every client is malicious')
  return honest


def _replacing(rows: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]) -> UpdateAttack:
  """The attack whose attackers send `rows(updates, malicious, rng)` (a copy of `updates` is returned)."""

  def attack(updates, malicious, rng):
    updates, malicious = _checked(updates, malicious)
    updates[malicious] = rows(updates, malicious, rng)
    return updates

  return attack


def sign_flip(scale: float = 1.0) -> UpdateAttack:
  """Attackers send `-scale` x their own update."""
  check_number(scale, 'scale', low=0.0, low_inclusive=False)
  return _replacing(lambda updates, malicious, rng: -scale * updates[malicious])


def scaling(boost: float = 10.0) -> UpdateAttack:
  """Attackers send `boost` x their own update (model replacement, with poisoned data)."""
  check_number(boost, 'boost', low=0.0, low_inclusive=False)
  return _replacing(lambda updates, malicious, rng: boost * updates[malicious])


def gaussian(norm_multiple: float = 3.0) -> UpdateAttack:
  """Attackers send random Gaussian directions with `norm_multiple` x the honest clients' mean norm."""
  check_number(norm_multiple, 'norm_multiple', low=0.0, low_inclusive=False)

  def rows(updates, malicious, rng):
    norm = norm_multiple * float(np.mean(np.linalg.norm(_honest(updates, malicious), axis=1)))
    noise = rng.normal(size=(int(malicious.sum()), updates.shape[1]))
    return noise * norm / np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)

  return _replacing(rows)


def alie_z(num_clients: int, num_malicious: int) -> float:
  """Baruch et al.'s z_max: s = floor(n/2 + 1) - f clients must be won over (at least 1); z = Phi^-1((n - s) / n)."""
  needed = max(1, math.floor(num_clients / 2 + 1) - num_malicious)
  return float(stats.norm.ppf((num_clients - needed) / num_clients))


def alie(z: Optional[float] = None) -> UpdateAttack:
  """Attackers all send the honest mean minus `z` honest standard deviations, per coordinate (default z: `alie_z`)."""
  if z is not None:
    check_number(z, 'z', low=0.0)

  def rows(updates, malicious, rng):
    honest = _honest(updates, malicious)
    shift = alie_z(len(updates), int(malicious.sum())) if z is None else z
    return honest.mean(axis=0) - shift * honest.std(axis=0)

  return _replacing(rows)


def ipm(epsilon: float = 0.5) -> UpdateAttack:
  """Attackers all send `-epsilon` x the honest clients' mean update."""
  check_number(epsilon, 'epsilon', low=0.0, low_inclusive=False)
  return _replacing(lambda updates, malicious, rng: -epsilon * _honest(updates, malicious).mean(axis=0))


def no_attack(updates: np.ndarray, malicious: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Every client sends its own update."""
  del rng
  return _checked(updates, malicious)[0]


UPDATE_ATTACKS: Mapping[str, Callable[..., UpdateAttack]] = {
    'sign_flip': sign_flip, 'scaling': scaling, 'gaussian': gaussian, 'alie': alie, 'ipm': ipm,
}
