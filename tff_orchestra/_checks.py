"""Argument and type checks shared by the factories (clear errors, early)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

_WEIGHT_DTYPES = (np.float32, np.float64, np.int32, np.int64)


def check_float_value_type(value_type: Any, factory_name: str) -> None:
  """Raises TypeError unless `value_type` is a tensor or struct of float tensors."""
  if not isinstance(value_type, (tff.TensorType, tff.StructType)) or not (
      tff.types.is_structure_of_floats(value_type)
  ):
    raise TypeError(
        f'{factory_name}.create: value_type must be a tff.TensorType or a '
        'tff.StructType of floating-point tensors (float16/32/64, not '
        f'federated, functional or sequence), got {value_type}'
    )


def check_fully_defined(value_type: Any, factory_name: str) -> None:
  """Raises TypeError unless every tensor of `value_type` has a fully defined shape (sums need one)."""
  specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))
  if not all(spec.shape.is_fully_defined() for spec in specs):
    raise TypeError(f'{factory_name}.create: value_type needs fully defined shapes, got {value_type}')


def check_weight_type(weight_type: Any, factory_name: str) -> None:
  """Raises TypeError unless `weight_type` is a numeric scalar tensor type."""
  if (
      not isinstance(weight_type, tff.TensorType)
      or weight_type.shape != ()
      or np.dtype(weight_type.dtype) not in [np.dtype(d) for d in _WEIGHT_DTYPES]
  ):
    raise TypeError(
        f'{factory_name}.create: weight_type must be a scalar tff.TensorType '
        f'of float32, float64, int32 or int64, got {weight_type}'
    )


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> None:
  """Raises TypeError/ValueError unless `value` is a finite number in range."""
  kind = numbers.Integral if integer else numbers.Real
  if isinstance(value, bool) or not isinstance(value, kind):
    expected = 'an int' if integer else 'a number'
    raise TypeError(f'{name} must be {expected}, got {value!r} ({type(value).__name__})')
  if not math.isfinite(value):
    raise ValueError(f'{name} must be finite, got {value!r}')
  if low is not None and (value < low or (value == low and not low_inclusive)):
    bracket = '>=' if low_inclusive else '>'
    raise ValueError(f'{name} must be {bracket} {low}, got {value!r}')
  if high is not None and (value > high or (value == high and not high_inclusive)):
    bracket = '<=' if high_inclusive else '<'
    raise ValueError(f'{name} must be {bracket} {high}, got {value!r}')


def check_factory(value: Any, name: str, *, weighted: bool) -> None:
  """Raises TypeError unless `value` is a (un)weighted aggregation factory."""
  expected = (
      tff.aggregators.WeightedAggregationFactory
      if weighted
      else tff.aggregators.UnweightedAggregationFactory
  )
  if not isinstance(value, expected):
    raise TypeError(
        f'{name} must be a tff.aggregators.{expected.__name__}, got '
        f'{type(value).__name__}'
    )
