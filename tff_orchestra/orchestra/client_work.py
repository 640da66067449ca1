"""Orchestra's client work, and the server clustering that completes it.

Per round, every selected client:

1. receives the online + target weights (from the distributor) and the global
   centroids C (broadcast from this process's state);
2. in the initialisation round 0 only fills its memory bank with target
   projections of view 1 (BatchNorm statistics left as they were) and trains
   nothing; in later rounds trains `local_epochs` epochs over its examples,
   reshuffled every epoch into full `batch_size` batches (`batches.py`),
   each batch:
   EMA-update the target (`target <- tau target + (1 - tau) online`), then
   `L = L_cluster + L_deg` with
   `L_cluster = -mean_i sum_k q_ik log p_ik`, `q = softmax(norm(g_t(f_t(x1))) C^T / T)`,
   `log p = log_softmax(norm(g(f(x2))) C^T / T)`, and `L_deg` the cross-entropy
   of the degeneracy head predicting the rotation of x3; one optimiser step with
   weight decay added to the gradient; push the target projections of x1 into
   the FIFO memory bank;
3. clusters its memory bank into K_l equal-size local centroids (Sinkhorn);
4. returns the change of *every* model variable (online, target, BatchNorm
   statistics) as its model update, weighted by the examples it trained on
   (those in full batches: the reference weights by its number of batches),
   plus its local centroids and loss sums. A client without one full batch,
   or whose data or results are not finite, contributes weight 0 and no
   centroids; the measurements count such clients.

The model update goes to the user's aggregation factory. The local centroids
travel separately: a reservoir-sampling collection brings them to the server
as they are (the server sees every participating client's K_l x D local
centroids in the clear: unit vectors summarising its data, never raw data).
The server then runs global clustering and keeps the new centroids in this
process's state for the next round.

**Private centroids** (`centroid_aggregation_factory`, not the reference's way):
instead of its local centroids, each client sends, for every global centroid,
the sum and the mass of its memory bank's projections assigned to it
(Sinkhorn-balanced soft assignments against the broadcast centroids, as
local clustering assigns), divided by the bank size so that each part has
norm at most 1; the factory (for example `GaussianNoise(...,
output='sum')`) sums them, noised; the server moves each global centroid to
its normalised summed projection when that cluster received at least one
projection's mass, and keeps it otherwise (one step of federated spherical
k-means on aggregates). The loss sums are not aggregated in this mode, so
the only aggregations a round sends to the server are the model update's and
the centroid sums', both through factories the user chose.

Deviation from the reference, on purpose: TFF clients are stateless, so the
memory bank starts empty every round and fills during training (the reference's
simulated clients also start each round without a meaningful bank); and the
online network is not run on view 1, whose output the reference computes but
never uses (it only moved BatchNorm statistics).
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra.orchestra import augment
from tff_orchestra.orchestra import batches
from tff_orchestra.orchestra import clustering
from tff_orchestra.orchestra.model import EncoderFn, OrchestraNetworks
from tff_orchestra.orchestra.config import OrchestraConfig


def cluster_loss(online_projection: tf.Tensor, target_projection: tf.Tensor, centroids: tf.Tensor, temperature: float) -> tf.Tensor:
  """`-mean_i sum_k q_ik log p_ik` (target projection already normalised)."""
  log_p = tf.nn.log_softmax(
      tf.matmul(tf.math.l2_normalize(online_projection, axis=1), centroids, transpose_b=True) / temperature, axis=1
  )
  q = tf.stop_gradient(tf.nn.softmax(tf.matmul(target_projection, centroids, transpose_b=True) / temperature, axis=1))
  return -tf.reduce_mean(tf.reduce_sum(q * log_p, axis=1))


def degeneracy_loss(logits: tf.Tensor, rotations: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=rotations, logits=logits))


def ema_update(pairs, decay: float) -> None:
  """`target <- decay * target + (1 - decay) * online` for each (target, online) pair."""
  for target, online in pairs:
    target.assign(decay * target + (1.0 - decay) * online)


def push_to_memory(bank: tf.Tensor, filled: tf.Tensor, projections: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """FIFO: the newest rows are the last ones; `filled` counts valid rows."""
  memory_size = tf.shape(bank)[0]
  newest = tf.ensure_shape(tf.concat([bank, projections], axis=0)[-memory_size:], bank.shape)
  return newest, tf.minimum(memory_size, filled + tf.shape(projections)[0])


def global_cluster_sums(bank: tf.Tensor, filled: tf.Tensor, centroids: tf.Tensor) -> collections.OrderedDict:
  """Per global centroid, the summed projections of the bank's valid rows and their mass, over the bank size.

  Soft, Sinkhorn-balanced assignments (as local clustering assigns); the
  last `filled` rows of `bank` are valid. Each part has L2 norm at most 1.
  """
  memory_size = bank.shape[0]
  rows = bank[memory_size - filled:]
  assignments = tf.cond(
      filled > 0,
      lambda: clustering.sinkhorn(tf.matmul(rows, centroids, transpose_b=True), clustering.CLIENT_SINKHORN_ITERATIONS),
      lambda: tf.zeros([0, centroids.shape[0]]),
  )
  return collections.OrderedDict(
      sums=tf.matmul(assignments, rows, transpose_a=True) / memory_size,
      masses=tf.reduce_sum(assignments, axis=0) / memory_size,
  )


def client_seed(round_seed: tf.Tensor, dataset: tf.data.Dataset) -> tf.Tensor:
  """The stateless seed of a client's round: from the round and the client's first batch.

  TFF clients carry no identity; the first batch tells clients apart, so
  clients differ, and a run repeats exactly for the same seed and data.
  """
  first = iter(dataset).get_next_as_optional()
  total = tf.cond(
      first.has_value(),
      lambda: tf.reduce_sum(tf.cast(first.get_value(), tf.float64)),
      lambda: tf.constant(0.0, tf.float64),
  )
  data_part = tf.cast(tf.math.floormod(tf.math.round(total * 1000.0), 2.0**31 - 1), tf.int64)
  return tf.stack([round_seed[0] * 1_000_003 + round_seed[1], data_part])


class LocalTraining:
  """One client's round (steps 2-4 of the module docstring) in plain TensorFlow.

  Builds the networks and the optimiser in the current graph or eager context:
  `build_client_update` wraps it in a TFF computation, and benchmarks call it
  directly (clients one after another) to time the same work without TFF.
  Calling it returns `(ClientResult, local centroids, loss sums, global
  cluster sums)` (the last for private centroids); each call
  starts from the given `incoming` weights with a fresh optimiser state and an
  empty memory bank. The update weight is the number of examples in full
  batches, or with `uniform_weighting` 1 (0 for a client without a full
  batch), as TFF's `ClientWeighting.UNIFORM`.

  The dataset is read through iterators (a `tf.while_loop`): autograph turns
  `for x in dataset` into `dataset.reduce`, whose reduce function TensorFlow
  instantiates anew each time the op runs. The client reads its dataset
  twice (seeding, gathering), so a dataset that reshuffles on each
  iteration makes the round non-repeatable: the client shuffles itself.
  """

  def __init__(
      self,
      config: OrchestraConfig,
      encoder_fn: EncoderFn,
      input_shape: Sequence[int],
      client_optimizer: tff.learning.optimizers.Optimizer,
      uniform_weighting: bool = False,
  ):
    self.config = config
    self.networks = OrchestraNetworks(encoder_fn, input_shape, config.projection_dim)
    self.model_weights = self.networks.model_weights()
    self._optimizer = client_optimizer
    self._uniform_weighting = uniform_weighting
    self._target_statistics = (
        self.networks.target_backbone.non_trainable_variables + self.networks.target_projector.non_trainable_variables
    )
    # One batch's learning step, compiled by XLA as one cluster when the config asks (`OrchestraConfig.jit_compile`).
    self._learn = tf.function(self._learning_step, jit_compile=True) if config.jit_compile else self._learning_step

  def _train_step(self, optimizer_state, batch, step_seed, centroids, bank, filled):
    """Step 2 for one batch: views, then `_learning_step`."""
    config = self.config
    views = augment.three_views(batch, step_seed, min_crop_area=config.min_crop_area, flip=config.flip)
    return self._learn(optimizer_state, *views, centroids, bank, filled)

  def _learning_step(self, optimizer_state, view1, view2, view3, rotations, centroids, bank, filled):
    """EMA, the loss and one optimiser step, the memory push.

    Returns (optimizer state, bank, filled, cluster loss, degeneracy loss).
    """
    config, networks, trainable = self.config, self.networks, self.model_weights.trainable
    ema_update(networks.ema_pairs, config.ema_decay)
    target_projection = networks.target_projection(view1)
    with tf.GradientTape() as tape:
      l_cluster = cluster_loss(networks.online_projection(view2), target_projection, centroids, config.temperature)
      l_degeneracy = degeneracy_loss(networks.degeneracy_head(networks.online_projection(view3)), rotations)
      loss = l_cluster + l_degeneracy
    gradients = tape.gradient(loss, trainable)
    gradients = [g + config.client_weight_decay * w for g, w in zip(gradients, trainable)]
    optimizer_state, updated = self._optimizer.next(optimizer_state, tuple(trainable), tuple(gradients))
    for variable, value in zip(trainable, updated):
      variable.assign(value)
    bank, filled = push_to_memory(bank, filled, target_projection)
    return optimizer_state, bank, filled, l_cluster, l_degeneracy

  @tf.function
  def __call__(self, incoming, dataset, centroids, initialization_round, round_seed):
    config, networks, model_weights = self.config, self.networks, self.model_weights
    trainable = model_weights.trainable
    views = dict(min_crop_area=config.min_crop_area, flip=config.flip)
    optimizer_state = self._optimizer.initialize(
        tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), tuple(trainable))
    )
    tf.nest.map_structure(lambda v, t: v.assign(t), model_weights, incoming)
    seed = client_seed(round_seed, dataset)
    bank, filled = tf.zeros([config.memory_size, config.projection_dim]), tf.constant(0)
    examples, data_finite = batches.gather_examples(dataset)
    num_examples = tf.shape(examples)[0]
    batches_per_epoch = num_examples // config.batch_size

    if initialization_round:
      # As the reference's reset_memory: target projections of view 1 of the first shuffled
      # batches, until the bank is full, BatchNorm statistics left as they were.
      saved = [tf.identity(v) for v in self._target_statistics]
      order = batches.epoch_orders(num_examples, config.batch_size, 1, seed + [0, 1])
      fill_batches = tf.minimum(batches_per_epoch, -(-config.memory_size // config.batch_size))
      for step in tf.range(fill_batches):
        view1, _, _, _ = augment.three_views(tf.gather(examples, order[step]), seed + [0, step], **views)
        bank, filled = push_to_memory(bank, filled, networks.target_projection(view1))
      for variable, value in zip(self._target_statistics, saved):
        variable.assign(value)

    cluster_sum, degeneracy_sum = tf.constant(0.0), tf.constant(0.0)
    epochs = tf.where(initialization_round, 0, config.local_epochs)
    order = batches.epoch_orders(num_examples, config.batch_size, epochs, seed + [1, 1])
    batches_run = tf.shape(order)[0]
    for step in tf.range(batches_run):
      optimizer_state, bank, filled, l_cluster, l_degeneracy = self._train_step(
          optimizer_state, tf.gather(examples, order[step]), seed + [1, step], centroids, bank, filled)
      cluster_sum += l_cluster
      degeneracy_sum += l_degeneracy

    cluster_sums = global_cluster_sums(bank, filled, centroids)
    valid_rows = bank[config.memory_size - filled:]
    local_centroids = tf.cond(
        filled > 0,
        lambda: clustering.local_clustering(valid_rows, config.num_local_clusters, seed + [2, 0]),
        lambda: tf.zeros([config.num_local_clusters, config.projection_dim]),
    )
    update = tf.nest.map_structure(lambda v, t: v - t, model_weights, incoming)
    # A client whose data holds NaN/inf, or whose training diverged, sends a
    # zero update with weight 0 and no centroids or losses: it cannot poison
    # the model, and the measurements count it.
    finite = tf.reduce_all(
        [data_finite, tf.math.is_finite(cluster_sum), tf.math.is_finite(degeneracy_sum)]
        + [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(update) + [local_centroids]]
    )
    update = tf.nest.map_structure(lambda t: tf.where(finite, t, tf.zeros_like(t)), update)
    trained_examples = batches_per_epoch * config.batch_size  # examples in full batches, as the reference's loader
    if self._uniform_weighting:
      weight = tf.cast(trained_examples > 0, tf.float32)
    else:
      weight = tf.cast(trained_examples, tf.float32)
    kept = tf.cast(finite, tf.float32)
    result = tff.learning.templates.ClientResult(update=update, update_weight=weight * kept)
    local = collections.OrderedDict(
        centroids=tf.where(finite, local_centroids, tf.zeros_like(local_centroids)),
        valid=tf.cast(tf.logical_and(filled > 0, finite), tf.float32),
    )
    metrics = collections.OrderedDict(
        cluster_loss_sum=tf.where(finite, cluster_sum, 0.0),
        degeneracy_loss_sum=tf.where(finite, degeneracy_sum, 0.0),
        **training_counts(batches_run, trained_examples, batches_per_epoch, kept),
    )
    cluster_sums = tf.nest.map_structure(lambda t: tf.where(finite, t, tf.zeros_like(t)), cluster_sums)
    return result, local, metrics, cluster_sums


def training_counts(batches_run, trained_examples, batches_per_epoch, kept) -> collections.OrderedDict:
  """What a client's round counts (summed over clients): batches and examples trained (0 if its update was
  dropped), whether it had no full batch, whether its update was dropped as not finite."""
  return collections.OrderedDict(
      batches=tf.cast(batches_run, tf.float32) * kept,
      examples=tf.cast(trained_examples, tf.float32) * kept,
      empty_clients=tf.cast(tf.equal(batches_per_epoch, 0), tf.float32),
      non_finite_clients=1.0 - kept,
  )


def build_client_update(
    config: OrchestraConfig,
    encoder_fn: EncoderFn,
    input_shape: Sequence[int],
    client_optimizer: tff.learning.optimizers.Optimizer,
    weights_type: tff.Type,
    uniform_weighting: bool = False,
) -> tff.Computation:
  """The TF computation a client runs: `LocalTraining` built inside TFF's graph."""
  dataset_type = tff.SequenceType(tff.TensorType(np.float32, [None, *input_shape]))
  centroids_type = tff.TensorType(np.float32, [config.num_global_clusters, config.projection_dim])

  @tff.tensorflow.computation(weights_type, dataset_type, centroids_type, np.bool_, tff.TensorType(np.int64, [2]))
  def client_update(incoming, dataset, centroids, initialization_round, round_seed):
    local_training = LocalTraining(config, encoder_fn, input_shape, client_optimizer, uniform_weighting)
    return local_training(incoming, dataset, centroids, initialization_round, round_seed)

  return client_update


def build_server_clustering(config: OrchestraConfig, collected_type: tff.Type) -> tff.Computation:
  """Global clustering of the collected local centroids, on the server."""
  centroids_type = tff.TensorType(np.float32, [config.num_global_clusters, config.projection_dim])

  @tff.tensorflow.computation(centroids_type, collected_type)
  def server_clustering(centroids, collected):
    local = tf.reshape(
        tf.boolean_mask(collected['centroids'], collected['valid'] > 0.5), [-1, config.projection_dim]
    )

    def cluster():
      new, before, after = clustering.global_clustering(
          centroids,
          local,
          temperature=config.temperature,
          steps=config.global_clustering_steps,
          learning_rate=config.global_clustering_learning_rate,
          momentum=config.global_clustering_momentum,
          weight_decay=config.global_clustering_weight_decay,
      )
      return new, before, after, clustering.clusters_in_use(local, new)

    def keep():
      return centroids, tf.constant(0.0), tf.constant(0.0), tf.constant(0)

    new, before, after, in_use = tf.cond(tf.shape(local)[0] > 0, cluster, keep)
    measurements = collections.OrderedDict(
        loss_before=before, loss=after, clusters_in_use=in_use, local_centroids=tf.shape(local)[0]
    )
    return new, measurements

  return server_clustering


def build_server_centroid_step(config: OrchestraConfig, sums_type: tff.Type) -> tff.Computation:
  """Private centroids: each global centroid moves to its normalised summed projection, if it got any mass.

  Post-processing of the aggregated (noised) sums: it costs no privacy.
  """
  centroids_type = tff.TensorType(np.float32, [config.num_global_clusters, config.projection_dim])
  memory_size = float(config.memory_size)

  @tff.tensorflow.computation(centroids_type, sums_type)
  def centroid_step(centroids, summed):
    mass = summed['masses'] * memory_size  # in projections
    updated = tf.logical_and(mass >= 1.0, tf.norm(summed['sums'], axis=1) > 0.0)
    new = tf.where(updated[:, tf.newaxis], tf.math.l2_normalize(summed['sums'], axis=1), centroids)
    measurements = collections.OrderedDict(
        clusters_in_use=tf.math.count_nonzero(updated, dtype=tf.int32), assigned_mass=tf.reduce_sum(mass)
    )
    return new, measurements

  return centroid_step


def build_orchestra_client_work(
    config: OrchestraConfig,
    encoder_fn: EncoderFn,
    input_shape: Sequence[int],
    client_optimizer: tff.learning.optimizers.Optimizer,
    weights_type: tff.Type,
    uniform_weighting: bool = False,
    centroid_aggregation_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """The `ClientWorkProcess`: client training, local-centroid collection, global clustering.

  State (`OrderedDict`): `round_num` (0 is the initialisation round),
  `global_centroids` [K_g, D], `collector` (the sampling collector's state;
  with `centroid_aggregation_factory`, `centroid_agg`, its state).
  Measurements: `train` (`cluster_loss`, `degeneracy_loss`, `examples`,
  `empty_clients`: clients without a full batch, `non_finite_clients`: clients whose update was dropped) and
  `global_clustering` (`loss_before`, `loss`, `clusters_in_use`,
  `local_centroids`); with `centroid_aggregation_factory` (private centroids,
  module docstring) no `train`, `global_clustering` (`clusters_in_use`,
  `assigned_mass`) and `centroid_aggregation` (the factory's measurements).
  """
  client_update = build_client_update(
      config, encoder_fn, input_shape, client_optimizer, weights_type, uniform_weighting
  )
  private = centroid_aggregation_factory is not None
  if private:
    sums_type = client_update.type_signature.result[3]
    aggregator = centroid_aggregation_factory.create(sums_type)
    server_step = build_server_centroid_step(config, sums_type)
  else:
    local_type = client_update.type_signature.result[1]
    aggregator = tff.aggregators.UnweightedReservoirSamplingFactory(config.max_clients_per_round).create(local_type)
    server_step = build_server_clustering(config, aggregator.next.type_signature.result.result.member)
  aggregator_key = 'centroid_agg' if private else 'collector'
  num_global, dim, seed = config.num_global_clusters, config.projection_dim, config.seed

  @tff.tensorflow.computation()
  def initial_centroids():
    # Like the reference's nn.Linear(D, K_g) initialisation: uniform(+-1/sqrt(D)).
    bound = 1.0 / np.sqrt(dim)
    return tf.random.stateless_uniform([num_global, dim], seed=[seed, 7], minval=-bound, maxval=bound)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(
        collections.OrderedDict(
            round_num=tff.federated_value(np.int64(0), tff.SERVER),
            global_centroids=tff.federated_eval(initial_centroids, tff.SERVER),
            **{aggregator_key: aggregator.initialize()},
        )
    )

  @tff.tensorflow.computation(np.int64)
  def round_inputs(round_num):
    return tf.equal(round_num, 0), tf.stack([tf.constant(seed, tf.int64), round_num])

  @tff.tensorflow.computation(client_update.type_signature.result[2])
  def mean_losses(sums):
    return collections.OrderedDict(
        cluster_loss=tf.math.divide_no_nan(sums['cluster_loss_sum'], sums['batches']),
        degeneracy_loss=tf.math.divide_no_nan(sums['degeneracy_loss_sum'], sums['batches']),
        examples=sums['examples'],
        empty_clients=sums['empty_clients'],
        non_finite_clients=sums['non_finite_clients'],
    )

  increment = tff.tensorflow.computation(lambda r: r + 1, np.int64)
  dataset_type = tff.SequenceType(tff.TensorType(np.float32, [None, *input_shape]))

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(dataset_type, tff.CLIENTS),
  )
  def next_fn(state, weights, client_data):
    initialization_round, round_seed = tff.federated_map(round_inputs, state.round_num)
    result, local, metrics, cluster_sums = tff.federated_map(
        client_update,
        (
            weights,
            client_data,
            tff.federated_broadcast(state.global_centroids),
            tff.federated_broadcast(initialization_round),
            tff.federated_broadcast(round_seed),
        ),
    )
    if private:
      aggregated = aggregator.next(state.centroid_agg, cluster_sums)
    else:
      aggregated = aggregator.next(state.collector, local)
    centroids, clustering_measurements = tff.federated_map(server_step, (state.global_centroids, aggregated.result))
    if private:
      measurements = collections.OrderedDict(
          global_clustering=clustering_measurements, centroid_aggregation=aggregated.measurements
      )
    else:
      measurements = collections.OrderedDict(
          train=tff.federated_map(mean_losses, tff.federated_sum(metrics)), global_clustering=clustering_measurements
      )
    new_state = tff.federated_zip(
        collections.OrderedDict(
            round_num=tff.federated_map(increment, state.round_num),
            global_centroids=centroids,
            **{aggregator_key: aggregated.state},
        )
    )
    measurements = tff.federated_zip(measurements)
    return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
