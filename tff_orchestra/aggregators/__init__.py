"""Composable TFF aggregation factories.

* `ClusterQualityWeighting` (weighted): scales client weights by how well
  their update fits a well-populated cluster of the round's updates.
* `GaussianNoise` (unweighted): clipping (fixed or adaptive), central DP
  noise drawn exactly on an integer grid (no floating-point leak), and
  epsilon accounting in the measurements, for the clients' `Sampling`
  (`privacy_accounting.py`).
* `DistributedDiscreteGaussian` (unweighted): each client's integer noise
  through a secure modular sum (distributed DP), accounted against the server
  (`discrete_gaussian.py` samples the noise exactly).
* `secure_integer_sum()`: TFF's secure sum of integers, sized for
  `GaussianNoise`'s grid vectors (its secure inner sum).
* `SecureFixedPointSum` (unweighted): floats summed with TFF's secure
  intrinsics as fixed-point integers with unbiased rounding.
* `FixedWeightSum` (unweighted): a `weight_sum_factory` that releases
  nothing; the weighted mean divides by a stated total.
* Robust estimates (unweighted, each client's value at the server in the
  clear, `client_values.py`): `CoordinateMedian`, `TrimmedMean`,
  `MultiKrum`; and `MedianNormClipping`, which clips each value to the
  round's median norm (only the norms are collected) before its inner factory.
* `chain(...)`: nests them (and TFF's own, and any `ComposableStage`) in
  client -> server order; the result yields the mean.
* `composition`: what a result means (`output_of`), the gate of every model
  aggregator (`as_model_aggregator`), and the protocol of a chain stage.
* `registry`: names for `--aggregator` specs (`register_aggregator`).
* `privacy_check`: every aggregation a computation sends to the server, and
  which of them a DP guarantee covers.
"""

from tff_orchestra.aggregators.chain import chain
from tff_orchestra.aggregators.cluster_quality import ClusterQualityWeighting
from tff_orchestra.aggregators.cluster_quality import signed_fold_sketch
from tff_orchestra.aggregators.composition import ComposableFactory
from tff_orchestra.aggregators.composition import ComposableStage
from tff_orchestra.aggregators.composition import as_model_aggregator
from tff_orchestra.aggregators.composition import output_of
from tff_orchestra.aggregators.coordinate_median import CoordinateMedian
from tff_orchestra.aggregators.distributed_discrete_gaussian import DistributedDiscreteGaussian
from tff_orchestra.aggregators.fixed_weight_sum import FixedWeightSum
from tff_orchestra.aggregators.gaussian_noise import AdaptiveClip
from tff_orchestra.aggregators.gaussian_noise import GaussianNoise
from tff_orchestra.aggregators.gaussian_noise import secure_integer_sum
from tff_orchestra.aggregators.krum import MultiKrum
from tff_orchestra.aggregators.median_norm_clipping import MedianNormClipping
from tff_orchestra.aggregators.privacy_accounting import Sampling
from tff_orchestra.aggregators.registry import register_aggregator
from tff_orchestra.aggregators.registry import registered_aggregators
from tff_orchestra.aggregators.secure_fixed_point import SecureFixedPointSum
from tff_orchestra.aggregators.secure_fixed_point import encode_fixed_point
from tff_orchestra.aggregators.trimmed_mean import TrimmedMean

__all__ = [
    'AdaptiveClip',
    'ClusterQualityWeighting',
    'ComposableFactory',
    'ComposableStage',
    'CoordinateMedian',
    'DistributedDiscreteGaussian',
    'FixedWeightSum',
    'GaussianNoise',
    'MedianNormClipping',
    'MultiKrum',
    'Sampling',
    'SecureFixedPointSum',
    'TrimmedMean',
    'as_model_aggregator',
    'chain',
    'encode_fixed_point',
    'output_of',
    'register_aggregator',
    'registered_aggregators',
    'secure_integer_sum',
    'signed_fold_sketch',
]
