"""Cluster-quality weighting: down-weight client updates that fit no cluster.

Each round (data flows client -> server):

1. The server broadcasts K unit-norm prototypes in a `sketch_dim`-dimensional
   sketch space and how much of the last round's clients each one held.
2. Each client sketches its flattened update with a seeded signed fold
   (every coordinate, times a random sign, is added to bucket
   `index % sketch_dim`: a random projection that costs one multiply and one
   sum per parameter, so it is cheap for millions of parameters), normalises
   the sketch, and computes its cosine similarity to every prototype.
3. Its quality is `floor + (1 - floor) * max_k(population_k * max(0, cos_k))`,
   where `population_k = min(1, K * mass_k)`: a prototype that held at least
   its fair share 1/K of the clients counts fully, a sparsely populated one
   proportionally less. The client's weight is multiplied by its quality and
   the inner (weighted) factory aggregates.
4. The prototypes learn by one step of federated spherical k-means per round
   with soft assignments `softmax(cos / temperature)`, from sums only (the
   assignment-weighted sketch sums and masses), which go through
   `statistics_sum_factory`, so they can be summed securely or with DP noise.
   Soft rather than Sinkhorn-balanced assignments, because balancing would
   erase the population signal that the quality relies on.

Until the prototypes have learned from one round with a non-zero update they
are random, so every client gets quality 1; zero updates (clients without
data, training-free rounds) take no part in the k-means step.
With `num_clusters=1` the single prototype is the normalised mean direction of
the previous round's updates, and quality reduces to *consensus weighting*:
`floor + (1 - floor) * max(0, cos(update, consensus))`. Identical updates get
identical qualities, so the result then equals the inner factory's. Choose K
well below the clients per round: with one client per cluster every cluster is
"well populated". Everything is deterministic for a given `seed`.

What the server sees in the clear with the default `SumFactory` statistics:
per-prototype sums of client sketches and the sum of qualities and weights.

**Against attackers** (`robust=True`). Population is no defence against
clients who coordinate: colluders fill their own cluster and earn its full
trust, quality ignores an update's norm, and round 1 (random prototypes) is
unweighted. The robust mode changes three things, within each round:

1. Every client sends its unit sketch and its update's norm to the server
   (`client_values.collect`: in the clear, `sketch_dim + 1` numbers per client,
   a random projection of its update; the update itself still goes through
   the inner factory, which may be a secure sum).
2. The server broadcasts the round's *robust centre*, the typical agreement
   with it, and a norm bound (`norm_multiplier` x the median norm). The
   centre is the normalised weighted sum of the unit sketches. A sketch's
   weight falls from 1 to 0 as its largest cosine with another client's goes
   from 0.9 to 1 (FoolsGold's idea, Fung et al. 2020, kept to near-twins:
   honest clients with different data never send near-identical updates,
   colluders who coordinate do, and then count about once together), and is
   0 for an update longer than twice the median norm (boosted updates do not
   steer the centre). The typical agreement `tau` is half the median over
   clients of `max(0, cos(sketch, centre))`.
3. Each client clips its update to the bound and takes the quality
   `floor + (1 - floor) * min(1, max(0, cos(sketch, centre)) / tau)`: full
   weight from half the median agreement up (with very different honest
   data, agreement is low for everyone), the floor for an update that points
   away from the consensus. Trust comes from agreeing with the round,
   not from the size of one's cluster, and round 1 is protected like every
   other.

The prototypes are still learned and their masses reported (a colluding block
shows as a cluster of its own), but they no longer set quality, so the result
does not depend on `num_clusters`.
"""

from __future__ import annotations

import collections
import functools
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_orchestra import _checks
from tff_orchestra.runtime import contexts
from tff_orchestra.aggregators import client_values
from tff_orchestra.aggregators import composition
from tff_orchestra.aggregators import non_finite

_EMPTY_MASS = 1e-6
# Robust mode (chosen on benchmarks/robustness.py's digits runs): near-twin updates and norm outliers in the centre.
_TWIN_COSINE = 0.9
_NORM_OUTLIER = 2.0
# Robust mode: full weight from this share of the median agreement with the centre up.
_FULL_WEIGHT_SHARE = 0.5


def reference_type(sketch_dim: int) -> tff.Type:
  """(robust centre [sketch_dim], typical agreement, norm bound): what the server broadcasts in the robust mode."""
  return tff.to_type((tff.TensorType(np.float32, [sketch_dim]), np.float32, np.float32))


@functools.lru_cache(maxsize=64)
def _sketch_signs(seed: int, leaf: int, size: int) -> np.ndarray:
  """Random +-1 (float32) for each of `size` coordinates (numpy, cached).

  Drawn once per (seed, leaf, size) and embedded in the TF graph as a constant,
  so clients do not redraw them every round: 4 bytes per parameter.
  """
  rng = np.random.default_rng([seed, leaf])
  signs = rng.integers(0, 2, size=size).astype(np.float32) * 2.0 - 1.0
  signs.setflags(write=False)
  return signs


def signed_fold_sketch(value, sketch_dim: int, seed: int) -> tf.Tensor:
  """Sketch (float32, [sketch_dim]) of a structure of fully defined tensors.

  Each leaf is flattened, multiplied by random signs (seed `(seed, leaf
  index)`) and folded: coordinate i is added to bucket `i % sketch_dim`. A
  count sketch whose buckets are fixed rather than hashed: linear, and inner
  products of sketches are unbiased estimates of inner products of the values
  (the signs are random), with error ~ 1/sqrt(sketch_dim) when the value's
  mass is spread over the buckets. It is a multiply and a reshaped sum, about
  45x cheaper than scattering into hashed buckets (0.4 vs 17 ms at 1M floats).
  """
  sketch = tf.zeros([sketch_dim], tf.float32)
  for index, leaf in enumerate(tf.nest.flatten(value)):
    leaf = tf.convert_to_tensor(leaf)
    size = leaf.shape.num_elements()
    if size is None:
      raise ValueError(f'signed_fold_sketch needs fully defined shapes, got {leaf.shape}')
    signed = tf.reshape(tf.cast(leaf, tf.float32), [-1]) * tf.constant(_sketch_signs(seed, index, size))
    padded = tf.pad(signed, [[0, (-size) % sketch_dim]])
    sketch += tf.reduce_sum(tf.reshape(padded, [-1, sketch_dim]), axis=0)
  return sketch


class ClusterQualityWeighting(composition.ComposableFactory, tff.aggregators.WeightedAggregationFactory):
  """`WeightedAggregationFactory` scaling client weights by cluster quality.

  State (`OrderedDict`): `learned_rounds` (rounds with at least one non-zero
  update, which the prototypes learned from), `prototypes` ([K, sketch_dim], unit
  rows), `prototype_mass` ([K], share of last round's clients per
  prototype), `inner_agg`, `statistics_agg`.

  Measurements (`OrderedDict`): `cluster_quality` (the inner factory's
  measurements), `quality_mean`, `quality_min`, `quality_max` (the last two
  only with `report_quality_range=True`: they use `tff.federated_max`,
  which is not secure), `prototype_mass`, `effective_clients`
  (`(sum w)^2 / sum w^2` of the quality-scaled weights), `non_finite_clients`
  (clients excluded for a NaN or infinite update, or a weight that is not
  finite and >= 0: `non_finite.py`; quality statistics are over the others),
  `statistics`; with `robust=True` also `norm_bound` and `clipped_clients`;
  with `report_client_qualities=True`, `client_qualities` (each client's
  quality, 0 for an excluded one, in the order TFF aggregates the clients: in
  simulation, the order of the client list).

  Its result is the inner factory's weighted mean, with the scaled weights.
  """

  inner_kind = composition.WEIGHTED
  inner_output = composition.MEAN
  output = composition.MEAN

  def __init__(
      self,
      num_clusters: int = 4,
      *,
      quality_floor: float = 0.1,
      sketch_dim: int = 256,
      temperature: float = 0.02,
      seed: int = 0,
      report_quality_range: bool = True,
      robust: bool = False,
      norm_multiplier: float = 2.0,
      report_client_qualities: bool = False,
      inner_factory: Optional[tff.aggregators.WeightedAggregationFactory] = None,
      statistics_sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
  ):
    """Configures the factory.

    Args:
      num_clusters: K, the number of prototypes (>= 1).
      quality_floor: The smallest quality, in [0, 1): a client that fits no
        populated cluster keeps this fraction of its weight.
      sketch_dim: Dimension of the sketch (>= 8). Cosines between
        sketches estimate cosines between updates with error ~ 1/sqrt(dim).
      temperature: Softness of the k-means assignments over cosines (> 0).
      seed: Seeds the sketch signs and the initial prototypes.
      report_quality_range: Report `quality_min`/`quality_max`. Turn off to
        keep `next` free of unsecure aggregation (with a secure
        `statistics_sum_factory` and a secure inner factory).
      robust: Quality from agreement with the round's robust centre, updates
        clipped to `norm_multiplier` x the round's median norm (module
        docstring). Sends each
        client's unit sketch and norm to the server in the clear.
      norm_multiplier: With `robust`, the norm bound is this times the
        median norm (> 0). 2, chosen on the robustness benchmark: 1 clips
        half the honest clients and costs 3 points of accuracy without
        attackers at Dirichlet 0.1; 3 lets boosted updates through.
      report_client_qualities: Report each client's quality
        (`client_qualities`): per-client information, sent in the clear.
      inner_factory: Aggregates values with the scaled weights; it must yield
        their weighted mean. Default
        `tff.aggregators.MeanFactory(no_nan_division=True)`.
      statistics_sum_factory: Sums the k-means and quality statistics.
        Default `tff.aggregators.SumFactory()`.
    """
    _checks.check_number(num_clusters, 'num_clusters', low=1, integer=True)
    _checks.check_number(quality_floor, 'quality_floor', low=0.0, high=1.0, high_inclusive=False)
    _checks.check_number(sketch_dim, 'sketch_dim', low=8, integer=True)
    _checks.check_number(temperature, 'temperature', low=0.0, low_inclusive=False)
    _checks.check_number(seed, 'seed', low=0, high=2**31 - 1, integer=True)
    for flag, name in ((report_quality_range, 'report_quality_range'), (robust, 'robust'),
                       (report_client_qualities, 'report_client_qualities')):
      if not isinstance(flag, bool):
        raise TypeError(f'{name} must be a bool, got {flag!r}')
    _checks.check_number(norm_multiplier, 'norm_multiplier', low=0.0, low_inclusive=False)
    if inner_factory is not None:
      composition.check_inner(self, inner_factory)
    self._statistics_sum_factory = statistics_sum_factory or tff.aggregators.SumFactory()
    _checks.check_factory(self._statistics_sum_factory, 'statistics_sum_factory', weighted=False)
    self._num_clusters = num_clusters
    self._floor = float(quality_floor)
    self._sketch_dim = sketch_dim
    self._temperature = float(temperature)
    self._seed = seed
    self._report_range = report_quality_range
    self._robust = robust
    self._norm_multiplier = float(norm_multiplier)
    self._report_client_qualities = report_client_qualities

  def default_inner_factory(self) -> tff.aggregators.WeightedAggregationFactory:
    return tff.aggregators.MeanFactory(no_nan_division=True)

  @property
  def num_clusters(self) -> int:
    return self._num_clusters

  def create(self, value_type: tff.Type, weight_type: tff.Type) -> tff.templates.AggregationProcess:
    _checks.check_float_value_type(value_type, 'ClusterQualityWeighting')
    contexts.check_context('ClusterQualityWeighting', secure_sums=False)
    _checks.check_fully_defined(value_type, 'ClusterQualityWeighting')
    _checks.check_weight_type(weight_type, 'ClusterQualityWeighting')
    scaled_weight_dtype = np.float64 if np.dtype(weight_type.dtype) == np.float64 else np.float32
    inner_process = self.inner_factory.create(value_type, tff.TensorType(scaled_weight_dtype))
    initial_prototypes = self._initial_prototypes()
    prototypes_type, mass_type = initial_prototypes.type_signature.result[0], initial_prototypes.type_signature.result[1]
    score_client = self._client_scoring(value_type, weight_type, prototypes_type, mass_type, scaled_weight_dtype)
    statistics_type = score_client.type_signature.result[3]
    if self._robust:
      sketch_row, robust_reference = self._robust_reference(value_type)
      sketch_flattening = client_values.Flattening(sketch_row.type_signature.result)
    statistics_process = self._statistics_sum_factory.create(statistics_type)
    kmeans_step = self._server_kmeans_step(prototypes_type, mass_type, statistics_type)

    @tff.federated_computation()
    def init_fn():
      prototypes, mass = tff.federated_eval(initial_prototypes, tff.SERVER)
      return tff.federated_zip(
          collections.OrderedDict(
              learned_rounds=tff.federated_value(np.int64(0), tff.SERVER),
              prototypes=prototypes,
              prototype_mass=mass,
              inner_agg=inner_process.initialize(),
              statistics_agg=statistics_process.initialize(),
          )
      )

    is_ready = tff.tensorflow.computation(lambda r: r > 0, np.int64)
    norm_bound_of = tff.tensorflow.computation(lambda reference: reference[2], reference_type(self._sketch_dim))
    clipped_count = tff.tensorflow.computation(lambda totals: tf.cast(tf.round(totals['clipped_clients']), tf.int32),
                                               statistics_type) if self._robust else None
    second_column = tff.tensorflow.computation(lambda rows: rows[:, 1], tff.TensorType(np.float32, [None, 2])) \
        if self._report_client_qualities else None
    add = tff.tensorflow.computation(lambda a, b: a + b, np.int64, np.int64)
    min_and_max = tff.tensorflow.computation(lambda ends: (-ends[0], ends[1]), tff.TensorType(np.float32, [2]))

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      # 1. Clients score their update against the broadcast prototypes and scale their weight. Robust: against
      #    the round's robust centre, from each client's sketch and norm, and clipped to its norm bound.
      ready = tff.federated_map(is_ready, state.learned_rounds)
      broadcast = [tff.federated_broadcast(state.prototypes), tff.federated_broadcast(state.prototype_mass),
                   tff.federated_broadcast(ready)]
      if self._robust:
        rows, _ = client_values.collect(tff.federated_map(sketch_row, value), sketch_flattening)
        reference = tff.federated_map(robust_reference, rows)
        broadcast.append(tff.federated_broadcast(reference))
      value, scaled_weight, quality_ends, statistics = tff.federated_map(score_client, (value, weight, *broadcast))
      # 2. The inner factory averages with the scaled weights.
      inner_output = inner_process.next(state.inner_agg, value, scaled_weight)
      # 3. The server takes one k-means step from the summed statistics.
      statistics_output = statistics_process.next(state.statistics_agg, statistics)
      prototypes, mass, quality_mean, effective, learned, non_finite_clients = tff.federated_map(
          kmeans_step, (state.prototypes, state.prototype_mass, statistics_output.result)
      )
      measurements = collections.OrderedDict(cluster_quality=inner_output.measurements, quality_mean=quality_mean)
      if self._report_range:
        # One federated_max of each client's (-low, high) gives both ends.
        measurements['quality_min'], measurements['quality_max'] = tff.federated_map(
            min_and_max, tff.federated_max(quality_ends))
      measurements['prototype_mass'] = mass
      measurements['effective_clients'] = effective
      measurements['non_finite_clients'] = non_finite_clients
      if self._robust:
        measurements['norm_bound'] = tff.federated_map(norm_bound_of, reference)
        measurements['clipped_clients'] = tff.federated_map(clipped_count, statistics_output.result)
      if self._report_client_qualities:
        # quality_ends[1] is each client's quality, 0 for an excluded one.
        measurements['client_qualities'] = tff.federated_map(
            second_column, client_values.collect(quality_ends, client_values.Flattening(tff.TensorType(np.float32, [2])))[0])
      measurements['statistics'] = statistics_output.measurements
      new_state = collections.OrderedDict(
          learned_rounds=tff.federated_map(add, (state.learned_rounds, learned)),
          prototypes=prototypes,
          prototype_mass=mass,
          inner_agg=inner_output.state,
          statistics_agg=statistics_output.state,
      )
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(new_state), inner_output.result, tff.federated_zip(measurements)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)

  def _initial_prototypes(self) -> tff.Computation:
    """() -> (K random unit prototypes, equal masses 1/K), from `seed`."""
    num_clusters, sketch_dim, seed = self._num_clusters, self._sketch_dim, self._seed

    @tff.tensorflow.computation()
    def initial_prototypes():
      draws = tf.random.stateless_normal([num_clusters, sketch_dim], seed=[seed, -1])
      return tf.math.l2_normalize(draws, axis=1), tf.fill([num_clusters], 1.0 / num_clusters)

    return initial_prototypes

  def _client_scoring(self, value_type, weight_type, prototypes_type, mass_type, scaled_weight_dtype) -> tff.Computation:
    """(update, weight, prototypes, mass, ready) -> (update, scaled weight, (-low, high) quality, k-means statistics)."""
    num_clusters, sketch_dim, seed = self._num_clusters, self._sketch_dim, self._seed
    floor, temperature = self._floor, self._temperature

    robust = self._robust
    parameters = [value_type, weight_type, prototypes_type, mass_type, np.bool_]

    def score(value, weight, prototypes, mass, ready, *reference):
      # An excluded client (non_finite.py) has a zero update and weight: it takes part in nothing below.
      value, weight, excluded = non_finite.exclude_non_finite_weighted(value, weight)
      included = 1.0 - tf.cast(excluded, tf.float32)
      unit_sketch = tf.math.l2_normalize(signed_fold_sketch(value, sketch_dim, seed))
      cosines = tf.linalg.matvec(prototypes, unit_sketch)
      if robust:
        # The update clipped to the round's bound (its unit sketch is unchanged); quality from the centre.
        centre, typical, bound = reference[0]
        norm = client_values.l2_norm(value)
        clipped = tf.logical_and(norm > bound, tf.logical_not(excluded))
        value = client_values.scaled(value, tf.where(clipped, bound / norm, 1.0))
        agreement = tf.nn.relu(tf.tensordot(centre, unit_sketch, 1))
        fit = tf.where(typical > 0, tf.minimum(1.0, agreement / typical), tf.cast(agreement > 0, tf.float32))
        quality = floor + (1.0 - floor) * fit
      else:
        population = tf.minimum(1.0, num_clusters * mass)
        fit = tf.reduce_max(population * tf.nn.relu(cosines))
        quality = tf.where(ready, floor + (1.0 - floor) * fit, 1.0)
      scaled_weight = tf.cast(weight, scaled_weight_dtype) * tf.cast(quality, scaled_weight_dtype)
      # A zero update (no data, or a round that trains nothing) has no
      # direction: it takes no part in learning the prototypes.
      active = tf.cast(tf.reduce_any(tf.not_equal(unit_sketch, 0.0)), tf.float32)
      assignment = tf.nn.softmax(cosines / temperature) * active
      w = tf.cast(scaled_weight, tf.float32)
      statistics = collections.OrderedDict(
          sketch_sums=assignment[:, tf.newaxis] * unit_sketch[tf.newaxis, :],
          assignment_mass=assignment,
          quality_sum=quality * included,
          weight_sum=w,
          weight_square_sum=w * w,
          clients=included,
          active_clients=active,
          non_finite_clients=1.0 - included,
      )
      if robust:
        statistics['clipped_clients'] = tf.cast(clipped, tf.float32)
      # The quality range is over included clients: an excluded one reports the other end. Sent as
      # (-low, high), so that one federated_max gives both.
      quality_low, quality_high = tf.where(excluded, 1.0, quality), tf.where(excluded, 0.0, quality)
      return value, scaled_weight, tf.stack([-quality_low, quality_high]), statistics

    if robust:
      return tff.tensorflow.computation(lambda v, w, p, m, r, ref: score(v, w, p, m, r, ref),
                                        *parameters, reference_type(sketch_dim))
    return tff.tensorflow.computation(lambda v, w, p, m, r: score(v, w, p, m, r), *parameters)

  def _robust_reference(self, value_type) -> tuple[tff.Computation, tff.Computation]:
    """(update -> its unit sketch and norm, one row; rows -> (robust centre, typical agreement, norm bound))."""
    sketch_dim, seed, multiplier = self._sketch_dim, self._seed, self._norm_multiplier

    @tff.tensorflow.computation(value_type)
    def sketch_row(value):
      # Computed on the value as sent: a non-finite one gives a non-finite row, which the collection leaves out.
      unit_sketch = tf.math.l2_normalize(signed_fold_sketch(value, sketch_dim, seed))
      norm = client_values.l2_norm(value)
      return tf.concat([unit_sketch, norm[tf.newaxis]], axis=0)

    @tff.tensorflow.computation(tff.TensorType(np.float32, [None, sketch_dim + 1]))
    def robust_reference(rows):
      sketches, norms = rows[:, :sketch_dim], rows[:, sketch_dim]
      # A sketch's weight in the centre falls from 1 to 0 as its largest cosine with another client's goes from
      # _TWIN_COSINE to 1 (FoolsGold's idea, kept to near-twins), and is 0 for a norm beyond _NORM_OUTLIER x
      # the median; if that leaves no one, every client counts.
      cosines = tf.matmul(sketches, sketches, transpose_b=True)
      others = tf.where(tf.eye(tf.shape(rows)[0], dtype=tf.bool), -1.0, cosines)
      weights = tf.clip_by_value((1.0 - tf.reduce_max(others, axis=1)) / (1.0 - _TWIN_COSINE), 0.0, 1.0)
      weights *= tf.cast(norms <= _NORM_OUTLIER * client_values.median(norms), tf.float32)
      weights = tf.where(tf.reduce_sum(weights) > 0, weights, tf.ones_like(weights))
      centre = tf.math.l2_normalize(tf.linalg.matvec(sketches, weights, transpose_a=True))
      typical = _FULL_WEIGHT_SHARE * client_values.median(tf.nn.relu(tf.linalg.matvec(sketches, centre)))
      bound = tf.where(tf.shape(rows)[0] > 0, multiplier * client_values.median(norms), np.inf)
      return centre, typical, bound

    return sketch_row, robust_reference

  @staticmethod
  def _server_kmeans_step(prototypes_type, mass_type, statistics_type) -> tff.Computation:
    """(prototypes, mass, summed statistics) -> (new prototypes, new mass, quality mean, effective clients,
    learned, non-finite clients)."""

    @tff.tensorflow.computation(prototypes_type, mass_type, statistics_type)
    def kmeans_step(prototypes, mass, statistics):
      assigned = statistics['assignment_mass']
      active = statistics['active_clients']
      has_members = tf.logical_and(
          assigned > _EMPTY_MASS, tf.norm(statistics['sketch_sums'], axis=1) > _EMPTY_MASS
      )
      new_prototypes = tf.where(
          has_members[:, tf.newaxis], tf.math.l2_normalize(statistics['sketch_sums'], axis=1), prototypes
      )
      learned = active > 0.0
      new_mass = tf.where(learned, tf.math.divide_no_nan(assigned, active), mass)
      quality_mean = tf.math.divide_no_nan(statistics['quality_sum'], statistics['clients'])
      effective = tf.math.divide_no_nan(statistics['weight_sum'] ** 2, statistics['weight_square_sum'])
      non_finite_clients = tf.cast(tf.round(statistics['non_finite_clients']), tf.int64)
      return new_prototypes, new_mass, quality_mean, effective, tf.cast(learned, tf.int64), non_finite_clients

    return kmeans_step
