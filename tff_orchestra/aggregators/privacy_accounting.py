"""RDP accounting of the sampled Gaussian mechanism, in Python and in-graph.

`dp_accounting` is Python; TFF runs aggregation on a C++ worker that cannot
call Python. Every round of a Gaussian mechanism with fixed noise multiplier and
sampling rate spends the same Renyi-DP vector, so we ask `dp_accounting` for
that vector once, at `create()`, and convert `rounds * rdp` to epsilon inside
the TensorFlow graph with the same formula `dp_accounting` uses
(`rdp_privacy_accountant.compute_epsilon`: Proposition 12 of Canonne, Kamath
and Steinke 2020). The result equals `RdpAccountant.get_epsilon` for the same
`DpEvent`; tests check that.

Distributed noise is the exception: a round's noise depends on how many
clients took part, so `GaussianNoise` keeps a count of rounds per number of
participants, and the RDP of each count (`rdp_by_participants`) is again
asked of `dp_accounting` once, at `create()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import dp_accounting
import numpy as np
import tensorflow as tf
from dp_accounting.rdp import rdp_privacy_accountant

RDP_ORDERS = np.array(rdp_privacy_accountant.DEFAULT_RDP_ORDERS, dtype=np.float64)


def round_event(
    noise_multiplier: float, sampling_probability: Optional[float]
) -> dp_accounting.DpEvent:
  """The `DpEvent` of one round: Gaussian, Poisson-sampled when q is given."""
  gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
  if sampling_probability is None:
    return gaussian
  return dp_accounting.PoissonSampledDpEvent(sampling_probability, gaussian)


def training_event(
    noise_multiplier: float, sampling_probability: Optional[float], rounds: int
) -> dp_accounting.DpEvent:
  """The `DpEvent` of `rounds` rounds of the same mechanism."""
  return dp_accounting.SelfComposedDpEvent(
      round_event(noise_multiplier, sampling_probability), int(rounds)
  )


def rdp_per_round(
    noise_multiplier: float, sampling_probability: Optional[float]
) -> np.ndarray:
  """Renyi-DP of one round at `RDP_ORDERS`, as computed by dp_accounting."""
  accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
  accountant.compose(round_event(noise_multiplier, sampling_probability))
  return np.array(accountant._rdp, dtype=np.float64)  # pylint: disable=protected-access


def distributed_noise_multipliers(noise_multiplier: float, expected_clients: int) -> np.ndarray:
  """The noise multiplier a round really has with m = 0..expected participants.

  Each participant adds its share `1 / sqrt(expected)` of the noise, so m of
  them give `noise_multiplier * sqrt(m / expected)`; more than expected count
  as `expected` (more noise than accounted: conservative).
  """
  return noise_multiplier * np.sqrt(np.arange(expected_clients + 1) / expected_clients)


def rdp_by_participants(
    noise_multiplier: float, sampling_probability: Optional[float], expected_clients: int
) -> np.ndarray:
  """RDP of one distributed-noise round with m = 0..expected participants: [expected + 1, orders].

  A round without participants releases nothing of any client's data and
  spends nothing.
  """
  multipliers = distributed_noise_multipliers(noise_multiplier, expected_clients)
  rows = [np.zeros_like(RDP_ORDERS)]
  rows += [rdp_per_round(z, sampling_probability) for z in multipliers[1:]]
  return np.stack(rows)


def distributed_training_event(
    noise_multiplier: float,
    sampling_probability: Optional[float],
    rounds_by_participants: Sequence[int],
) -> dp_accounting.DpEvent:
  """The `DpEvent` of distributed-noise rounds, `rounds_by_participants[m]` of them with m participants."""
  multipliers = distributed_noise_multipliers(noise_multiplier, len(rounds_by_participants) - 1)
  return dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(round_event(float(z), sampling_probability), int(count))
      for z, count in zip(multipliers[1:], rounds_by_participants[1:])
      if count > 0
  ])


def epsilon_of_event(event: dp_accounting.DpEvent, target_delta: float) -> float:
  """Epsilon of any `DpEvent` at `target_delta`, from dp_accounting's RDP accountant."""
  accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
  accountant.compose(event)
  return float(accountant.get_epsilon(target_delta))


def epsilon_python(
    noise_multiplier: float,
    sampling_probability: Optional[float],
    rounds: int,
    target_delta: float,
) -> float:
  """Epsilon after `rounds` rounds, straight from dp_accounting (reference)."""
  return epsilon_of_event(training_event(noise_multiplier, sampling_probability, rounds), target_delta)


def epsilon_in_graph(
    rdp_one_round: np.ndarray, rounds: tf.Tensor, target_delta: float
) -> tf.Tensor:
  """Epsilon (float64) after `rounds` rounds, inside a TF graph."""
  one_round = tf.constant(rdp_one_round, tf.float64)
  rounds = tf.cast(rounds, tf.float64)
  # 0 * inf (no noise, no rounds yet) is NaN: no rounds spend nothing.
  return epsilon_of_rdp_in_graph(tf.where(rounds > 0.0, rounds * one_round, tf.zeros_like(one_round)), target_delta)


def epsilon_by_participants_in_graph(
    rdp_table: np.ndarray, rounds_by_participants: tf.Tensor, target_delta: float
) -> tf.Tensor:
  """Epsilon (float64) after rounds counted by participants (`rdp_by_participants`' rows), in a TF graph."""
  table = tf.constant(rdp_table, tf.float64)
  counts = tf.cast(rounds_by_participants, tf.float64)[:, tf.newaxis]
  # Rows never used may be inf (no noise): 0 * inf would be NaN.
  rdp = tf.reduce_sum(tf.where(counts > 0.0, counts * table, tf.zeros_like(table)), axis=0)
  return epsilon_of_rdp_in_graph(rdp, target_delta)


def epsilon_of_rdp_in_graph(rdp: tf.Tensor, target_delta: float) -> tf.Tensor:
  """Epsilon (float64) of a total RDP vector at `RDP_ORDERS`, in a TF graph."""
  orders = tf.constant(RDP_ORDERS, tf.float64)
  delta = tf.constant(target_delta, tf.float64)
  via_kl = delta**2 + tf.math.expm1(-rdp) > 0.0
  bound = rdp + tf.math.log1p(-1.0 / orders) - tf.math.log(delta * orders) / (orders - 1.0)
  usable = orders > 1.01
  eps = tf.where(
      via_kl,
      tf.zeros_like(rdp),
      tf.where(usable, bound, tf.fill(tf.shape(rdp), tf.constant(np.inf, tf.float64))),
  )
  return tf.maximum(tf.reduce_min(eps), 0.0)
