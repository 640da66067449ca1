"""The clients of a round and the order of their examples: from numpy and the seed only."""

import numpy as np
import tensorflow as tf

from tff_orchestra.training import sampling


def test_shuffled_order_comes_from_numpy_and_the_seed_only():
  dataset = tf.data.Dataset.from_tensor_slices({'x': np.arange(10.0), 'y': np.arange(10)})
  order = np.random.default_rng((0, 3, 1)).permutation(10)
  got = list(sampling.shuffled(dataset, (0, 3, 1)).as_numpy_iterator())
  assert [int(element['y']) for element in got] == order.tolist()
  assert [float(element['x']) for element in got] == order.astype(float).tolist()
  assert list(sampling.shuffled(dataset.take(0), (0, 3, 1))) == []


def test_clients_of_a_round_depend_on_seed_and_round_only():
  ids = [f'client_{i}' for i in range(20)]
  first = sampling.sample_clients(ids, 5, seed=0, round_num=3)
  assert first == sampling.sample_clients(ids, 5, seed=0, round_num=3)
  assert len(set(first)) == 5 and first == sorted(first, key=ids.index)
  assert first != sampling.sample_clients(ids, 5, seed=0, round_num=4)
  assert first != sampling.sample_clients(ids, 5, seed=1, round_num=3)
