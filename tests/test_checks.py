"""The shared argument checks: the error names the argument and what was expected."""

import math

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import _checks


@pytest.mark.parametrize(
    'value, kwargs, error, match',
    [
        (True, {}, TypeError, r"clip must be a number, got True \(bool\)"),
        ('1', {}, TypeError, r"clip must be a number, got '1' \(str\)"),
        (1.5, dict(integer=True), TypeError, r'clip must be an int, got 1.5'),
        (math.inf, {}, ValueError, 'clip must be finite, got inf'),
        (math.nan, {}, ValueError, 'clip must be finite, got nan'),
        (0.0, dict(low=0.0, low_inclusive=False), ValueError, 'clip must be > 0.0, got 0.0'),
        (-1, dict(low=0), ValueError, 'clip must be >= 0, got -1'),
        (1.0, dict(high=1.0, high_inclusive=False), ValueError, 'clip must be < 1.0, got 1.0'),
        (2, dict(high=1), ValueError, 'clip must be <= 1, got 2'),
    ],
)
def test_check_number_refuses(value, kwargs, error, match):
  with pytest.raises(error, match=match):
    _checks.check_number(value, 'clip', **kwargs)


@pytest.mark.parametrize('value, kwargs', [(0.5, dict(low=0.0, high=1.0)), (np.int64(3), dict(integer=True, low=1)), (0, dict(low=0))])
def test_check_number_accepts(value, kwargs):
  _checks.check_number(value, 'x', **kwargs)


def test_check_factory():
  _checks.check_factory(tff.aggregators.SumFactory(), 'inner', weighted=False)
  _checks.check_factory(tff.aggregators.MeanFactory(), 'inner', weighted=True)
  with pytest.raises(TypeError, match='inner must be a tff.aggregators.WeightedAggregationFactory, got SumFactory'):
    _checks.check_factory(tff.aggregators.SumFactory(), 'inner', weighted=True)


def test_value_and_weight_types():
  _checks.check_float_value_type(tff.to_type(((np.float32, (2,)), np.float64)), 'F')
  with pytest.raises(TypeError, match=r'F.create: value_type must be .* got int32'):
    _checks.check_float_value_type(tff.TensorType(np.int32), 'F')
  _checks.check_weight_type(tff.TensorType(np.int64), 'F')
  with pytest.raises(TypeError, match=r'F.create: weight_type must be a scalar'):
    _checks.check_weight_type(tff.TensorType(np.float32, [2]), 'F')
