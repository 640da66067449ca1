"""`TrimmedMean`: the coordinate-wise trimmed mean of the client values (Yin et al., 2018).

For each coordinate, the `floor(trim_fraction * n)` largest and as many
smallest of the round's `n` values are dropped and the rest averaged: what
`scipy.stats.trim_mean(values, trim_fraction)` computes. It tolerates up to
that many arbitrary values per coordinate; with fewer clients than
`1 / trim_fraction` nothing is trimmed and it is the mean. `trim_fraction=0`
is the mean; values near 0.5 approach the median.
It needs each client's value at the server (`client_values.py`).
"""

from __future__ import annotations

import collections

import tensorflow as tf

from tff_orchestra import _checks
from tff_orchestra.aggregators import client_values


class TrimmedMean(client_values.RobustEstimate):
  """`UnweightedAggregationFactory` whose result is the coordinate-wise trimmed mean of the client values.

  State: `()`. Measurements (`OrderedDict`): `clients`, `non_finite_clients`,
  `trimmed_per_side` (values dropped at each end of every coordinate).
  """

  def __init__(self, trim_fraction: float = 0.2):
    """Args: trim_fraction: Share of the clients dropped at each end of every coordinate, in [0, 0.5)."""
    _checks.check_number(trim_fraction, 'trim_fraction', low=0.0, high=0.5, high_inclusive=False)
    self._trim_fraction = float(trim_fraction)

  @property
  def trim_fraction(self) -> float:
    return self._trim_fraction

  def estimate(self, rows):
    clients = tf.shape(rows)[0]
    # float64, as Python computes int(trim_fraction * n): the same count as scipy's.
    trimmed = tf.cast(tf.floor(self._trim_fraction * tf.cast(clients, tf.float64)), tf.int32)
    kept = tf.sort(rows, axis=0)[trimmed:clients - trimmed]
    return tf.reduce_mean(kept, axis=0), collections.OrderedDict(trimmed_per_side=trimmed)

  def empty_measurements(self):
    return collections.OrderedDict(trimmed_per_side=tf.constant(0))
