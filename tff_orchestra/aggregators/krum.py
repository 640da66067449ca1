"""`MultiKrum`: the mean of the client values nearest their neighbours (Blanchard et al., 2017).

With `n` clients of which at most `f = num_byzantine` are assumed malicious,
each client's score is the sum of squared L2 distances to its
`max(1, n - f - 2)` nearest other clients (at most `n - 1`); the `m` clients
with the lowest scores (ties: the earlier client) are averaged. `m = 1` is
Krum; the default `m = n - f` is Multi-Krum as in El Mhamdi et al. (2018).
Flower's `Krum` strategy computes the same scores.

Krum's guarantee needs `n > 2f + 2`; with fewer clients it still runs (the
neighbour count is floored at 1) and says nothing. Honest clients with very
different data are far from each other too, so Krum drops some of them:
with non-IID data it costs accuracy when no one attacks.
It needs each client's value at the server (`client_values.py`).
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_orchestra import _checks
from tff_orchestra.aggregators import client_values


def krum_scores(rows: tf.Tensor, num_byzantine: int) -> tf.Tensor:
  """Each row's sum of squared distances to its `max(1, n - f - 2)` nearest other rows (`[n]`)."""
  clients = tf.shape(rows)[0]
  squares = tf.reduce_sum(rows * rows, axis=1)
  distances = tf.maximum(squares[:, tf.newaxis] + squares[tf.newaxis, :] - 2 * tf.matmul(rows, rows, transpose_b=True), 0)
  distances = tf.where(tf.eye(clients, dtype=tf.bool), tf.constant(float('inf'), rows.dtype), distances)
  neighbours = tf.minimum(tf.maximum(1, clients - num_byzantine - 2), clients - 1)
  nearest = tf.sort(distances, axis=1)[:, :neighbours]
  return tf.reduce_sum(nearest, axis=1)


class MultiKrum(client_values.RobustEstimate):
  """`UnweightedAggregationFactory` whose result is the mean of the `num_selected` best-scored client values.

  State: `()`. Measurements (`OrderedDict`): `clients`, `non_finite_clients`,
  `selected_clients`.
  """

  def __init__(self, num_byzantine: int = 0, num_selected: Optional[int] = None):
    """Configures the factory.

    Args:
      num_byzantine: f, the number of malicious clients per round to tolerate (>= 0).
      num_selected: m, how many clients to average (>= 1; 1 is Krum). Default
        `n - f` for the round's `n` clients. Capped at `n`.
    """
    _checks.check_number(num_byzantine, 'num_byzantine', low=0, integer=True)
    if num_selected is not None:
      _checks.check_number(num_selected, 'num_selected', low=1, integer=True)
    self._num_byzantine = num_byzantine
    self._num_selected = num_selected

  def estimate(self, rows):
    clients = tf.shape(rows)[0]
    wanted = clients - self._num_byzantine if self._num_selected is None else self._num_selected
    selected = tf.clip_by_value(wanted, 1, clients)
    scores = tf.cond(clients > 1, lambda: krum_scores(rows, self._num_byzantine), lambda: tf.zeros([clients], rows.dtype))
    best = tf.argsort(scores, stable=True)[:selected]
    mean = tf.reduce_mean(tf.gather(rows, best), axis=0)
    return mean, collections.OrderedDict(selected_clients=selected)

  def empty_measurements(self):
    return collections.OrderedDict(selected_clients=tf.constant(0))
