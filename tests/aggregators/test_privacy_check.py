"""Every aggregation that reaches the server is listed; only the noised value is covered by epsilon."""

import warnings

import numpy as np
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import privacy_check

VALUE = tff.TensorType(np.float32, [3])
WEIGHT = tff.TensorType(np.float32)


def test_the_readme_chain_releases_seven_channels_in_the_clear():
  # Issue 15, finding 4: TFF's static check finds 5 plain aggregations; the secure ones reveal exact totals too.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    noise = agg.GaussianNoise(1.0, clip=1.0, expected_clients_per_round=2)
    factory = agg.chain(agg.ClusterQualityWeighting(2), noise, agg.secure_integer_sum())
  process = factory.create(VALUE, WEIGHT)
  found = privacy_check.channels(process.next, [noise.noised_channel_type(VALUE)], 'central discrete Gaussian noise')
  assert [(c.intrinsic, c.secure, c.covered_by_epsilon) for c in found] == [
      ('federated_secure_sum_bitwidth', True, True),  # the clipped updates on the noise's integer grid
      ('federated_secure_sum_bitwidth', True, False),  # the secure sum's counts of clipped coordinates
      ('federated_secure_sum_bitwidth', True, False),
      ('federated_secure_sum_bitwidth', True, False),
      ('federated_sum', False, False),  # GaussianNoise's clipping statistics
      ('federated_sum', False, False),  # MeanFactory's sum of weights
      ('federated_sum', False, False),  # ClusterQualityWeighting's sketch sums, qualities and counts
      ('federated_max', False, False),  # the lowest quality (negated) and the highest, exactly
  ]
  assert 'sketch_sums=float32[2,256]' in found[6].value_type
  assert privacy_check.summary(found).startswith('8 aggregations reach the server: 1 noised (covered by epsilon), 7')


def test_without_noise_nothing_is_covered_and_tffs_mean_is_one_plain_sum_each():
  process = tff.aggregators.MeanFactory().create(VALUE, WEIGHT)
  found = privacy_check.server_bound_aggregations(process.next)
  assert [(uri, str(value_type)) for uri, value_type in found] == [
      ('federated_sum', 'float32[3]'), ('federated_sum', 'float32')
  ]
  assert not any(c.covered_by_epsilon for c in privacy_check.channels(process.next, [VALUE], noise=None))
