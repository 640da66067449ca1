"""FixedWeightSum: the weighted mean's denominator stated, not aggregated; every channel of a chain noised."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import privacy_check

VECTOR = tff.TensorType(np.float32, [4])
WEIGHT = tff.TensorType(np.float32)


def test_the_mean_divides_by_the_stated_total_and_nothing_is_aggregated():
  factory = tff.aggregators.MeanFactory(weight_sum_factory=agg.FixedWeightSum(4.0))
  process = factory.create(VECTOR, WEIGHT)
  output = process.next(process.initialize(), [np.ones(4, np.float32), 3 * np.ones(4, np.float32)], [1.0, 0.5])
  np.testing.assert_allclose(output.result, (1.0 + 1.5) / 4.0)
  assert output.measurements['mean_weight']['fixed_weight_sum'] == 4.0
  found = privacy_check.channels(process.next)
  assert [c.value_type for c in found] == ['float32[4]']  # the weighted values only: no weight sum


def test_a_chain_can_send_nothing_outside_its_noise():
  """Quality statistics and updates noised, the quality range and the weight sum dropped."""
  statistics_noise = agg.GaussianNoise(1.0, 2.0, output='sum', report_clipping=False)
  update_noise = agg.GaussianNoise(1.0, 1.0, expected_clients_per_round=3, report_clipping=False)
  with pytest.warns(UserWarning, match='sums the client weights without noise'):
    factory = agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=8, report_quality_range=False, statistics_sum_factory=statistics_noise),
        update_noise,
        weight_sum_factory=agg.FixedWeightSum(3.0),
    )
  process = factory.create(VECTOR, WEIGHT)
  # The quality statistics, flattened: 2 x 8 sketch sums, 2 assignment masses and 6 scalar sums.
  statistics_size = 2 * 8 + 2 + 6
  noised = [tff.TensorType(np.int64, [statistics_size]), update_noise.noised_channel_type(VECTOR)]
  found = privacy_check.channels(process.next, noised, 'discrete Gaussian')
  assert len(found) == 2 and all(c.covered_by_epsilon for c in found)
  output = process.next(process.initialize(), [np.full(4, 0.1, np.float32)] * 3, [1.0] * 3)
  assert np.all(np.isfinite(output.result))


@pytest.mark.parametrize('total, value_type, match', [
    (0.0, WEIGHT, 'total'),
    (2.5, tff.TensorType(np.int32), 'counts'),
    (1.0, VECTOR, 'scalar'),
])
def test_bad_input(total, value_type, match):
  with pytest.raises((TypeError, ValueError), match=match):
    agg.FixedWeightSum(total).create(value_type)
