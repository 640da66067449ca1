"""Federated averaging in TFF with this library's three factories, chained.

Trains a small Keras classifier on scikit-learn's handwritten digits (shipped
with scikit-learn: no download), split across non-IID clients (each holds
mostly two classes), with

    chain(ClusterQualityWeighting -> GaussianNoise -> secure_integer_sum)

as `model_aggregator` of `tff.learning.algorithms.build_weighted_fed_avg`, and
prints the loss and the aggregator's measurements every round.
Run it with `tff-orchestra fedavg-demo`.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from sklearn.datasets import load_digits
from tqdm import tqdm

from tff_orchestra import aggregators as agg
from tff_orchestra import runtime


def label_skewed_digits(num_clients: int, seed: int, batch_size: int = 32) -> list[tf.data.Dataset]:
  """Digits sorted by label (with a little jitter) and cut into equal client shards."""
  images, labels = load_digits(return_X_y=True)
  images = (images / 16.0).astype(np.float32)
  rng = np.random.default_rng(seed)
  order = np.argsort(labels + rng.uniform(0, 0.5, len(labels)), kind='stable')
  datasets = []
  for part in np.array_split(order, num_clients):
    data = collections.OrderedDict(x=images[part], y=labels[part].astype(np.int32))
    datasets.append(tf.data.Dataset.from_tensor_slices(data).shuffle(512, seed=seed).batch(batch_size))
  return datasets


def _model_fn() -> tff.learning.models.VariableModel:
  keras_model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(64,)),
      tf.keras.layers.Dense(32, activation='relu'),
      tf.keras.layers.Dense(10),
  ])
  return tff.learning.models.from_keras_model(
      keras_model,
      input_spec=collections.OrderedDict(
          x=tf.TensorSpec([None, 64], tf.float32), y=tf.TensorSpec([None], tf.int32)
      ),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
  )


def run(rounds: int = 10, num_clients: int = 10, seed: int = 0, noise_multiplier: float = 0.05) -> list[dict]:
  """Trains for `rounds` rounds in its own simulation context, one line per round."""
  tf.keras.utils.set_random_seed(seed)
  factory = agg.chain(
      agg.ClusterQualityWeighting(num_clusters=3, seed=seed),
      agg.GaussianNoise(noise_multiplier, clip=2.0, expected_clients_per_round=num_clients),
      agg.secure_integer_sum(),
  )
  learner = tff.learning.algorithms.build_weighted_fed_avg(
      _model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1),
      client_weighting=tff.learning.ClientWeighting.UNIFORM,
      model_aggregator=factory,
  )
  data = label_skewed_digits(num_clients, seed)
  history = []
  with runtime.simulation_context():
    state = learner.initialize()
    for round_num in tqdm(range(1, rounds + 1), desc='rounds', leave=False):
      output = learner.next(state, data)
      state = output.state
      history.append(_report(round_num, output.metrics))
  return history


def _report(round_num: int, metrics) -> dict:
  """Prints one line for the round and returns its numbers."""
  train = metrics['client_work']['train']
  aggregator = metrics['aggregator']
  dp = aggregator['cluster_quality']['mean_value']
  row = dict(
      round=round_num,
      loss=float(train['loss']),
      accuracy=float(train['sparse_categorical_accuracy']),
      quality_mean=float(aggregator['quality_mean']),
      quality_min=float(aggregator['quality_min']),
      epsilon=float(dp['epsilon']),
      clipped_fraction=float(dp['clipped_fraction']),
      secure_clipped_count=int(dp['dp']['secure_upper_clipped_count'] + dp['dp']['secure_lower_clipped_count']),
  )
  tqdm.write(
      f'round {round_num:2d}  loss {row["loss"]:.3f}  accuracy {row["accuracy"]:.3f}'
      f'  quality mean/min {row["quality_mean"]:.2f}/{row["quality_min"]:.2f}'
      f'  epsilon {row["epsilon"]:.1f}  clipped {row["clipped_fraction"]:.2f}'
      f'  secure clipped {row["secure_clipped_count"]}'
  )
  return row
