import functools
import warnings

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg

VECTOR = tff.TensorType(np.float32, [6])
WEIGHT = tff.TensorType(np.float32)


def _three_stages(**chain_kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    return agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=16),
        agg.GaussianNoise(0.0, 100.0, output='sum'),
        agg.secure_integer_sum(),
        **chain_kwargs,
    )


@pytest.fixture(scope='module')
def three_stage_process():
  return _three_stages().create(VECTOR, WEIGHT)


def test_three_stages_nest_in_data_flow_order(three_stage_process):
  measurements = three_stage_process.next.type_signature.result.measurements.member
  secure = measurements.cluster_quality.mean_value.dp
  assert list(dict(tff.structure.iter_elements(secure))) == [
      'secure_upper_clipped_count', 'secure_lower_clipped_count', 'secure_upper_threshold', 'secure_lower_threshold'
  ]
  assert 'epsilon' in dict(tff.structure.iter_elements(measurements.cluster_quality.mean_value))
  assert 'quality_mean' in dict(tff.structure.iter_elements(measurements))


def test_three_stages_compute_the_weighted_mean(three_stage_process):
  values = [np.full(6, 1.0, np.float32), np.full(6, 3.0, np.float32)]
  output = three_stage_process.next(three_stage_process.initialize(), values, [1.0, 3.0])
  np.testing.assert_allclose(output.result, np.full(6, 2.5), atol=1e-4)


def test_boundary_warns_about_the_unnoised_weight_sum():
  with pytest.warns(UserWarning, match='sums the client weights without noise'):
    agg.chain(agg.ClusterQualityWeighting(2), agg.GaussianNoise(1.0, 1.0, output='sum'))


def test_weight_sum_factory_is_used_at_the_boundary():
  factory = _three_stages(weight_sum_factory=agg.SecureFixedPointSum(10.0, bits=24))
  process = factory.create(VECTOR, WEIGHT)
  measurements = process.next.type_signature.result.measurements.member
  assert 'secure_bound' in dict(tff.structure.iter_elements(measurements.cluster_quality.mean_weight))


def test_fully_secure_chain_passes_the_static_check():
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    factory = agg.chain(
        agg.ClusterQualityWeighting(
            2, sketch_dim=16, report_quality_range=False, statistics_sum_factory=agg.SecureFixedPointSum(16.0)
        ),
        agg.DistributedDiscreteGaussian(0.5, 1.0, expected_clients_per_round=4),
        weight_sum_factory=agg.SecureFixedPointSum(4.0),
    )
  tff.test.assert_not_contains_unsecure_aggregation(factory.create(VECTOR, WEIGHT).next)


def test_tff_wrappers_as_callable_stages():
  factory = agg.chain(
      functools.partial(tff.aggregators.zeroing_factory, 100.0),
      functools.partial(tff.aggregators.clipping_factory, 1.0),
      agg.GaussianNoise(0.0, 10.0, expected_clients_per_round=1),
  )
  assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)
  process = factory.create(VECTOR)
  output = process.next(process.initialize(), [np.full(6, 3.0, np.float32)])
  np.testing.assert_allclose(np.linalg.norm(output.result), 1.0, rtol=1e-5)  # clipped by clipping_factory
  assert output.measurements['zeroed_count'] == 0
  assert output.measurements['zeroing']['clipped_count'] == 1


def test_mixes_with_tff_mean_factory_explicitly():
  factory = agg.chain(
      agg.ClusterQualityWeighting(2, sketch_dim=16),
      lambda inner: tff.aggregators.MeanFactory(value_sum_factory=inner, no_nan_division=True),
      tff.aggregators.SecureSumFactory(10.0),
  )
  process = factory.create(VECTOR, WEIGHT)
  output = process.next(process.initialize(), [np.ones(6, np.float32)] * 2, [1.0, 1.0])
  np.testing.assert_allclose(output.result, np.ones(6), atol=1e-5)


def test_a_single_mean_stage_is_returned_as_is():
  stage = agg.GaussianNoise(0.0, 1.0, expected_clients_per_round=3)
  assert agg.chain(stage) is stage


def test_chain_does_not_modify_its_stages():
  cluster = agg.ClusterQualityWeighting(2)
  agg.chain(cluster, tff.aggregators.MeanFactory())
  assert type(cluster.inner_factory) is tff.aggregators.MeanFactory


@pytest.mark.parametrize(
    'stages, error, match',
    [
        ((), ValueError, 'at least one stage'),
        ((agg.GaussianNoise(1.0, 1.0, output='sum'), agg.ClusterQualityWeighting()), ValueError, 'put weighted stages first'),
        ((agg.SecureFixedPointSum(), agg.SecureFixedPointSum()), TypeError, 'takes no inner factory'),
        ((lambda inner: 'not a factory', agg.SecureFixedPointSum()), TypeError, 'returned str'),
        ((3, agg.SecureFixedPointSum()), TypeError, 'must be a factory or a callable'),
        ((agg.GaussianNoise(1.0, 1.0, output='sum'), lambda inner: inner), TypeError, 'last stage'),
    ],
)
def test_bad_chains(stages, error, match):
  with pytest.raises(error, match=match):
    agg.chain(*stages)


def test_bad_weight_sum_factory():
  with pytest.raises(TypeError, match='weight_sum_factory'):
    agg.chain(agg.SecureFixedPointSum(), weight_sum_factory=tff.aggregators.MeanFactory())


@pytest.mark.parametrize('stages, kwargs', [
    ((agg.ClusterQualityWeighting(2, statistics_sum_factory=tff.aggregators.SecureSumFactory(1.0)), agg.CoordinateMedian()),
     {}),
    ((agg.MedianNormClipping(), agg.TrimmedMean()), {'weight_sum_factory': agg.SecureFixedPointSum(10.0, bits=20)}),
])
def test_a_robust_estimate_beside_a_secure_sum_is_refused(stages, kwargs):
  with pytest.raises(ValueError, match='cannot be combined with a secure sum'):
    agg.chain(*stages, **kwargs)


def test_a_robust_estimate_ends_a_chain_and_its_result_is_the_chains():
  process = agg.chain(agg.MedianNormClipping(), agg.CoordinateMedian()).create(VECTOR)
  values = [np.full(6, v, np.float32) for v in (1.0, 2.0, -40.0)]
  np.testing.assert_allclose(process.next(process.initialize(), values).result, np.full(6, 1.0))
