"""A client's examples in full batches, reshuffled every epoch: the reference's `DataLoader(shuffle=True, drop_last=True)`.

The client gathers its dataset (any batching) into one tensor, then each
epoch draws a permutation from a stateless seed and cuts it into
`batch_size` batches, dropping the incomplete last one. The seed comes from
the run's seed and the round, so a resumed run sees the same orders as an
uninterrupted one. A client holds its examples in memory for the round.
"""

from __future__ import annotations

import tensorflow as tf


def gather_examples(dataset: tf.data.Dataset) -> tuple[tf.Tensor, tf.Tensor]:
  """(every example of a dataset of batched images, stacked [N, ...]; whether all of them are finite)."""
  element = dataset.element_spec
  stacked = tf.TensorArray(element.dtype, size=0, dynamic_size=True, infer_shape=False,
                           element_shape=tf.TensorShape([None]).concatenate(element.shape[1:]))
  finite = tf.constant(True)
  for images in iter(dataset):
    stacked = stacked.write(stacked.size(), images)
    finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(images)))
  examples = tf.cond(
      stacked.size() > 0, stacked.concat, lambda: tf.zeros([0, *element.shape[1:]], element.dtype)
  )
  return examples, finite


def epoch_orders(num_examples: tf.Tensor, batch_size: int, epochs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """[epochs * (num_examples // batch_size), batch_size] example indices: each epoch a fresh permutation in full batches."""
  batches_per_epoch = num_examples // batch_size
  keys = tf.random.stateless_uniform(tf.stack([tf.cast(epochs, tf.int32), num_examples]), seed=seed)
  orders = tf.argsort(keys, axis=1)[:, :batches_per_epoch * batch_size]
  return tf.reshape(orders, [-1, batch_size])
