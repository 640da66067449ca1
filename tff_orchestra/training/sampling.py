"""Which clients train in a round, and in which order each sees its examples.

Both are drawn by numpy from the run's seed and the round, never from
TensorFlow's global seed, so a resumed run samples exactly as an
uninterrupted one, in any process.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def sample_clients(client_ids, clients_per_round: int, seed: int, round_num: int) -> list[str]:
  rng = np.random.default_rng([seed, round_num])
  return sorted(rng.choice(list(client_ids), clients_per_round, replace=False).tolist(), key=client_ids.index)


def shuffled(dataset: tf.data.Dataset, seed: tuple[int, ...]) -> tf.data.Dataset:
  """The dataset's elements in an order drawn by numpy from `seed`, the same each iteration.

  Unlike `Dataset.shuffle(seed=...)`, the order does not depend on TensorFlow's
  global seed, which other code in the process may have set: a run repeats in
  any process.
  """
  batches = list(dataset.batch(2**31 - 1))  # all elements in one batch, or none
  if not batches:
    return dataset
  [elements] = batches
  size = int(tf.nest.flatten(elements)[0].shape[0])
  order = np.random.default_rng(seed).permutation(size)
  return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda t: tf.gather(t, order), elements))
