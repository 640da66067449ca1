"""Composable TFF aggregation factories.

* `ClusterQualityWeighting` (weighted): scales client weights by how well
  their update fits a well-populated cluster of the round's updates.
* `GaussianNoise` (unweighted): clipping, Gaussian DP noise (central or
  distributed), and epsilon accounting in the measurements.
* `SecureFixedPointSum` (unweighted): floats summed with TFF's secure
  intrinsics as fixed-point integers with unbiased rounding.
* `chain(...)`: nests them (and TFF's own) in client -> server order.
"""

from tff_orchestra.aggregators.chain import chain
from tff_orchestra.aggregators.cluster_quality import ClusterQualityWeighting
from tff_orchestra.aggregators.cluster_quality import signed_fold_sketch
from tff_orchestra.aggregators.gaussian_noise import AdaptiveClip
from tff_orchestra.aggregators.gaussian_noise import GaussianNoise
from tff_orchestra.aggregators.secure_fixed_point import SecureFixedPointSum
from tff_orchestra.aggregators.secure_fixed_point import encode_fixed_point

__all__ = [
    'AdaptiveClip',
    'ClusterQualityWeighting',
    'GaussianNoise',
    'SecureFixedPointSum',
    'chain',
    'encode_fixed_point',
    'signed_fold_sketch',
]
