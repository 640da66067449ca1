import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests.aggregators.testing import BAD_VALUE_TYPE_IDS, BAD_VALUE_TYPES, MEASUREMENT, CountingMeanFactory, CountingSumFactory
from tff_orchestra.aggregators import ClusterQualityWeighting, SecureFixedPointSum, signed_fold_sketch
from tff_orchestra.aggregators import privacy_check

DIM = 40
VECTOR = tff.TensorType(np.float32, [DIM])
SCALAR = tff.TensorType(np.float32)
STRUCT = tff.to_type(((np.float32, (2,)), np.float64))
WEIGHT = tff.TensorType(np.float32)


def _majority_and_outlier(seed=0):
  rng = np.random.default_rng(seed)
  direction = rng.normal(size=DIM).astype(np.float32)
  majority = [direction + 0.3 * rng.normal(size=DIM).astype(np.float32) for _ in range(9)]
  return majority, -3.0 * direction


@pytest.fixture(scope='module')
def mean_process():
  return tff.aggregators.MeanFactory().create(VECTOR, WEIGHT)


@pytest.fixture(scope='module', params=[1, 4], ids=['K1', 'K4'])
def vector_process(request):
  return request.param, ClusterQualityWeighting(request.param, seed=3).create(VECTOR, WEIGHT)


def test_is_weighted(vector_process):
  assert isinstance(ClusterQualityWeighting(), tff.aggregators.WeightedAggregationFactory)
  assert vector_process[1].is_weighted


@pytest.mark.parametrize('value_type', [SCALAR, STRUCT], ids=['scalar', 'struct'])
@pytest.mark.parametrize('weight_dtype', [np.float32, np.float64, np.int32, np.int64])
def test_type_signature(value_type, weight_dtype):
  process = ClusterQualityWeighting(3, sketch_dim=16).create(value_type, tff.TensorType(weight_dtype))
  state = tff.FederatedType(
      collections.OrderedDict(
          learned_rounds=np.int64,
          prototypes=tff.TensorType(np.float32, [3, 16]),
          prototype_mass=tff.TensorType(np.float32, [3]),
          inner_agg=collections.OrderedDict(value_sum_process=(), weight_sum_process=()),
          statistics_agg=(),
      ),
      tff.SERVER,
  )
  measurements = collections.OrderedDict(
      cluster_quality=collections.OrderedDict(mean_value=(), mean_weight=()),
      quality_mean=np.float32,
      quality_min=np.float32,
      quality_max=np.float32,
      prototype_mass=tff.TensorType(np.float32, [3]),
      effective_clients=np.float32,
      non_finite_clients=np.int64,
      statistics=(),
  )
  expected = tff.FunctionType(
      parameter=collections.OrderedDict(
          state=state,
          value=tff.FederatedType(value_type, tff.CLIENTS),
          weight=tff.FederatedType(weight_dtype, tff.CLIENTS),
      ),
      result=tff.templates.MeasuredProcessOutput(
          state, tff.FederatedType(value_type, tff.SERVER), tff.FederatedType(measurements, tff.SERVER)
      ),
  )
  assert process.next.type_signature.is_equivalent_to(expected)
  assert process.initialize.type_signature.is_equivalent_to(tff.FunctionType(None, state))


def test_identical_updates_match_mean_factory(vector_process, mean_process):
  _, process = vector_process
  value = np.linspace(-1, 1, DIM).astype(np.float32)
  weights = [1.0, 2.0, 3.0, 4.0]
  state = process.initialize()
  for _ in range(3):
    output = process.next(state, [value] * 4, weights)
    state = output.state
    assert output.measurements['quality_min'] == pytest.approx(output.measurements['quality_max'])
    expected = mean_process.next(mean_process.initialize(), [value] * 4, weights).result
    np.testing.assert_allclose(output.result, expected, rtol=1e-6)


def test_outlier_is_down_weighted_within_three_rounds(vector_process, mean_process):
  num_clusters, process = vector_process
  majority, outlier = _majority_and_outlier()
  values, weights = majority + [outlier], [1.0] * 10
  majority_mean = np.mean(majority, axis=0)
  plain_mean = mean_process.next(mean_process.initialize(), values, weights).result
  state = process.initialize()
  for _ in range(3):
    output = process.next(state, values, weights)
    state = output.state
  measurements = output.measurements
  # The single outlier has the lowest quality; the majority keeps nearly full weight.
  assert measurements['quality_min'] < 0.5 < 0.9 < measurements['quality_max']
  assert measurements['effective_clients'] < 10.0
  assert np.linalg.norm(output.result - majority_mean) < 0.75 * np.linalg.norm(plain_mean - majority_mean)


def test_deterministic_for_a_seed():
  majority, outlier = _majority_and_outlier(seed=1)
  runs = []
  for seed in (7, 7, 8):
    process = ClusterQualityWeighting(3, seed=seed).create(VECTOR, WEIGHT)
    state = process.initialize()
    for _ in range(2):
      output = process.next(state, majority + [outlier], [1.0] * 10)
      state = output.state
    runs.append((state['prototypes'], output.result))
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  assert not np.allclose(runs[0][0], runs[2][0])


def test_one_cluster_is_consensus_weighting():
  """K=1: quality = floor + (1 - floor) * max(0, cos(sketch, last round's consensus))."""
  floor, sketch_dim, seed = 0.2, 64, 5
  process = ClusterQualityWeighting(1, quality_floor=floor, sketch_dim=sketch_dim, seed=seed).create(VECTOR, WEIGHT)
  majority, outlier = _majority_and_outlier(seed=2)
  first = process.next(process.initialize(), majority, [1.0] * 9)
  unit_sketches = [tf.math.l2_normalize(signed_fold_sketch(v, sketch_dim, seed)).numpy() for v in majority]
  consensus = np.sum(unit_sketches, axis=0)
  consensus /= np.linalg.norm(consensus)
  np.testing.assert_allclose(first.state['prototypes'][0], consensus, atol=1e-5)
  assert first.state['prototype_mass'] == pytest.approx([1.0])
  probe = majority[0]
  second = process.next(first.state, [probe], [1.0])
  cosine = float(np.dot(unit_sketches[0], consensus))
  assert second.measurements['quality_mean'] == pytest.approx(floor + (1 - floor) * max(0.0, cosine), abs=1e-5)
  third = process.next(first.state, [outlier], [1.0])
  assert third.measurements['quality_mean'] == pytest.approx(floor)


def test_zero_total_weight_gives_no_nan(vector_process):
  _, process = vector_process
  output = process.next(process.initialize(), [np.ones(DIM, np.float32)] * 3, [0.0, 0.0, 0.0])
  np.testing.assert_array_equal(output.result, np.zeros(DIM))
  assert output.measurements['effective_clients'] == 0.0
  assert np.all(np.isfinite(output.state['prototypes']))


def test_integer_weights_are_scaled_in_float():
  process = ClusterQualityWeighting(2, sketch_dim=16).create(SCALAR, tff.TensorType(np.int64))
  output = process.next(process.initialize(), [1.0, 3.0], [1, 3])
  assert output.result == pytest.approx(2.5)


def test_delegates_to_inner_and_statistics_factories():
  factory = ClusterQualityWeighting(
      2, sketch_dim=16, inner_factory=CountingMeanFactory(), statistics_sum_factory=CountingSumFactory()
  )
  process = factory.create(STRUCT, WEIGHT)
  state = process.initialize()
  for round_num in range(1, 4):
    output = process.next(state, [((1.0, 2.0), 3.0), ((3.0, 4.0), 5.0)], [1.0, 1.0])
    state = output.state
    assert state['inner_agg'] == round_num and state['statistics_agg'] == round_num
    assert output.measurements['cluster_quality'] == collections.OrderedDict(counted=MEASUREMENT)
    assert output.measurements['statistics'] == collections.OrderedDict(counted=MEASUREMENT)
    if round_num == 1:  # Every quality is 1 before the prototypes have learned.
      np.testing.assert_allclose(output.result[0], [2.0, 3.0], rtol=1e-6)


def test_secure_configuration_has_no_unsecure_aggregation():
  secure = ClusterQualityWeighting(
      2,
      sketch_dim=16,
      report_quality_range=False,
      statistics_sum_factory=SecureFixedPointSum(16.0),
      inner_factory=tff.aggregators.MeanFactory(SecureFixedPointSum(10.0), SecureFixedPointSum(10.0)),
  ).create(VECTOR, WEIGHT)
  tff.test.assert_not_contains_unsecure_aggregation(secure.next)
  majority, _ = _majority_and_outlier()
  output = secure.next(secure.initialize(), majority, [1.0] * 9)
  np.testing.assert_allclose(output.result, np.mean(majority, axis=0), atol=1e-3)
  # The quality range needs federated_max, which the static check rejects.
  reporting = ClusterQualityWeighting(2, sketch_dim=16).create(VECTOR, WEIGHT)
  with pytest.raises(AssertionError):
    tff.test.assert_not_contains_unsecure_aggregation(reporting.next)


@pytest.fixture(scope='module')
def robust_process():
  return ClusterQualityWeighting(4, robust=True, report_client_qualities=True, seed=3).create(VECTOR, WEIGHT)


def _honest_and_colluders(seed=0):
  """Six honest clients around one direction; four colluders each send -5 x an honest update."""
  majority, _ = _majority_and_outlier(seed)
  honest = majority[:6]
  return honest, [-5.0 * h for h in honest[:4]]


def test_robust_mode_protects_round_one_from_colluders_whatever_their_cluster(robust_process, mean_process):
  honest, colluders = _honest_and_colluders()
  values, weights = honest + colluders, [1.0] * 10
  output = robust_process.next(robust_process.initialize(), values, weights)
  qualities = output.measurements['client_qualities']
  np.testing.assert_allclose(qualities[6:], 0.1)  # the floor: they point away from the round's centre
  assert np.all(qualities[:6] > 0.8)
  # Every colluder is clipped to twice the median norm (an honest client's), so the step follows the honest majority.
  norms = np.linalg.norm(np.stack(values), axis=1)
  assert output.measurements['norm_bound'] == pytest.approx(2 * np.median(norms), rel=1e-5)
  assert output.measurements['clipped_clients'] == 4
  honest_direction = np.mean(honest, axis=0)
  cosine = np.dot(output.result, honest_direction) / np.linalg.norm(output.result) / np.linalg.norm(honest_direction)
  assert cosine > 0.95
  plain = mean_process.next(mean_process.initialize(), values, weights).result
  assert np.dot(plain, honest_direction) < 0  # what the mean does with the same round


def test_robust_mode_reports_zero_quality_for_an_excluded_client(robust_process):
  honest, _ = _honest_and_colluders()
  output = robust_process.next(robust_process.initialize(), honest + [np.full(DIM, np.nan, np.float32)], [1.0] * 7)
  assert output.measurements['client_qualities'][-1] == 0.0
  assert output.measurements['non_finite_clients'] == 1 and np.all(np.isfinite(output.result))


def test_robust_mode_sends_each_clients_sketch_and_norm_in_the_clear():
  process = ClusterQualityWeighting(2, robust=True, sketch_dim=16, report_quality_range=False,
                                    statistics_sum_factory=SecureFixedPointSum(100.0, bits=20),
                                    inner_factory=tff.aggregators.MeanFactory(
                                        value_sum_factory=SecureFixedPointSum(100.0, bits=20),
                                        weight_sum_factory=SecureFixedPointSum(100.0, bits=20))).create(VECTOR, WEIGHT)
  unsecure = [c for c in privacy_check.channels(process.next) if not c.secure]
  assert [c.value_type for c in unsecure] == ['<float32[17],bool>']  # unit sketch and norm, with a non-finite flag


def test_signed_fold_sketch_is_linear_and_preserves_angles():
  rng = np.random.default_rng(0)
  x = rng.normal(size=20000).astype(np.float32)
  y = (0.6 * x + 0.8 * rng.normal(size=20000)).astype(np.float32)
  sx, sy = (signed_fold_sketch(v, 1024, 0).numpy() for v in (x, y))
  np.testing.assert_allclose(signed_fold_sketch(2 * x - y, 1024, 0).numpy(), 2 * sx - sy, rtol=1e-4, atol=1e-3)
  true_cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
  sketch_cos = sx @ sy / np.linalg.norm(sx) / np.linalg.norm(sy)
  assert sketch_cos == pytest.approx(true_cos, abs=0.1)


def test_signed_fold_sketch_inner_products_are_unbiased_over_seeds():
  rng = np.random.default_rng(1)
  x = rng.normal(size=1000).astype(np.float32)
  y = (0.6 * x + 0.8 * rng.normal(size=1000)).astype(np.float32)
  products = [
      signed_fold_sketch(x, 16, seed).numpy() @ signed_fold_sketch(y, 16, seed).numpy() for seed in range(300)
  ]
  scale = np.linalg.norm(x) * np.linalg.norm(y)
  assert np.mean(products) / scale == pytest.approx(x @ y / scale, abs=0.06)


def test_signed_fold_sketch_of_a_structure_sums_its_leaves_sketches():
  rng = np.random.default_rng(2)
  kernel, bias = rng.normal(size=(30, 7)).astype(np.float32), rng.normal(size=5).astype(np.float32)
  whole = signed_fold_sketch([kernel, bias], 8, 3).numpy()
  assert whole.shape == (8,)
  signs = [np.random.default_rng([3, leaf]).integers(0, 2, size=n) * 2.0 - 1.0 for leaf, n in enumerate((210, 5))]
  expected = np.zeros(8)
  for flat, sign in zip((kernel.ravel(), bias), signs):
    np.add.at(expected, np.arange(flat.size) % 8, flat * sign)
  np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(num_clusters=0), ValueError, 'num_clusters'),
        (dict(num_clusters=2.5), TypeError, 'num_clusters'),
        (dict(quality_floor=1.0), ValueError, 'quality_floor'),
        (dict(quality_floor=-0.1), ValueError, 'quality_floor'),
        (dict(sketch_dim=4), ValueError, 'sketch_dim'),
        (dict(temperature=0.0), ValueError, 'temperature'),
        (dict(seed=-1), ValueError, 'seed'),
        (dict(report_quality_range='yes'), TypeError, 'report_quality_range'),
        (dict(robust=1), TypeError, 'robust'),
        (dict(norm_multiplier=0.0), ValueError, 'norm_multiplier'),
        (dict(report_client_qualities=None), TypeError, 'report_client_qualities'),
        (dict(inner_factory=tff.aggregators.SumFactory()), TypeError, 'inner_factory'),
        (dict(statistics_sum_factory=tff.aggregators.MeanFactory()), TypeError, 'statistics_sum_factory'),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    ClusterQualityWeighting(**kwargs)


@pytest.mark.parametrize('value_type', BAD_VALUE_TYPES, ids=BAD_VALUE_TYPE_IDS)
def test_bad_value_type_raises_type_error(value_type):
  with pytest.raises(TypeError, match='value_type'):
    ClusterQualityWeighting().create(value_type, WEIGHT)


@pytest.mark.parametrize(
    'weight_type',
    [tff.TensorType(np.str_), tff.TensorType(np.float32, [2]), tff.FederatedType(np.float32, tff.CLIENTS)],
    ids=['string', 'vector', 'federated'],
)
def test_bad_weight_type_raises_type_error(weight_type):
  with pytest.raises(TypeError, match='weight_type'):
    ClusterQualityWeighting().create(SCALAR, weight_type)


def test_zero_updates_do_not_teach_the_prototypes(vector_process):
  """A round of zero updates (Orchestra's round 0) leaves the prototypes as they were."""
  num_clusters, process = vector_process
  state = process.initialize()
  zero_round = process.next(state, [np.zeros(DIM, np.float32)] * 4, [1.0] * 4)
  np.testing.assert_array_equal(zero_round.state['prototypes'], state['prototypes'])
  assert zero_round.state['learned_rounds'] == 0
  majority, outlier = _majority_and_outlier()
  state = zero_round.state
  for _ in range(3):
    output = process.next(state, majority + [outlier], [1.0] * 10)
    state = output.state
  assert state['learned_rounds'] == 3
  assert output.measurements['quality_min'] < 0.5 < 0.9 < output.measurements['quality_max']
  if num_clusters > 1:  # Zero updates used to collapse every prototype onto one.
    assert len(np.unique(np.round(state['prototypes'], 4), axis=0)) >= 2


def test_value_shapes_must_be_fully_defined():
  with pytest.raises(TypeError, match='fully defined shapes'):
    ClusterQualityWeighting().create(tff.TensorType(np.float32, [None]), WEIGHT)
