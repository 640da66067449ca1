"""Which aggregations of a computation reach the server, and which of them a DP guarantee covers.

TFF's `tff.test.assert_not_contains_unsecure_aggregation` says whether any
plain aggregation is left; this lists them all, secure or not, from the
computation itself (its building block, through TFF's public
`tff.framework.transform_postorder`): every intrinsic that takes a value
placed at the clients and puts a result at the server. Each is a channel from
the clients to the server. A secure one hides the clients' individual values,
not their aggregate: the server learns the exact sum.

A differential-privacy guarantee covers only what is noised. `channels()`
marks as noised the aggregations of a value with a noised type's shapes
(dtype aside: a secure sum aggregates it as int64); each DP factory says what
its noised aggregation carries (`noised_channel_type(value_type)`: the value
itself for `GaussianNoise`, the padded integer vector for
`DistributedDiscreteGaussian`). Every other channel, secure or not, is outside
epsilon and is released in the clear. The rule is by shape: a side channel
with exactly a noised type's shapes would be marked too (none of this
library's factories has one).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Optional

import tensorflow_federated as tff


@dataclasses.dataclass(frozen=True)
class Channel:
  """One aggregation from the clients to the server."""

  intrinsic: str
  value_type: str
  secure: bool
  noised_by: Optional[str] = None

  @property
  def covered_by_epsilon(self) -> bool:
    return self.noised_by is not None


def server_bound_aggregations(comp: tff.Computation) -> list[tuple[str, tff.Type]]:
  """(intrinsic, the clients' value type) for every aggregation from the clients to the server, in `comp`."""
  found = []

  def visit(building_block):
    if isinstance(building_block, tff.framework.Intrinsic):
      signature = building_block.type_signature
      if isinstance(signature, tff.FunctionType) and _at(signature.result, tff.SERVER):
        clients_values = [t for t in _flat_types(signature.parameter) if _at(t, tff.CLIENTS) and not t.all_equal]
        if clients_values:
          found.append((building_block.uri, clients_values[0].member))
    return building_block, False

  tff.framework.transform_postorder(comp.to_building_block(), visit)
  return found


def channels(
    comp: tff.Computation, noised_types: Sequence[tff.Type] = (), noise: Optional[str] = None
) -> list[Channel]:
  """Every server-bound aggregation of `comp`; those of a noised type's shapes marked `noised_by=noise`."""
  noised_shapes = {_shapes(t) for t in noised_types} - {None} if noise else set()
  result = []
  for intrinsic, value_type in server_bound_aggregations(comp):
    noised = _shapes(value_type) in noised_shapes
    result.append(Channel(intrinsic, str(value_type), intrinsic.startswith('federated_secure'), noise if noised else None))
  return result


def summary(found: Sequence[Channel]) -> str:
  """One line: how many channels reach the server, how many epsilon covers, how many are in the clear."""
  covered = sum(channel.covered_by_epsilon for channel in found)
  secure = sum(channel.secure and not channel.covered_by_epsilon for channel in found)
  return (
      f'{len(found)} aggregations reach the server: {covered} noised (covered by epsilon), '
      f'{len(found) - covered} released in the clear ({secure} of them through secure sums, which hide each '
      'client\'s value but not the exact total)'
  )


def write_report(found: Sequence[Channel], path: str, joint_epsilon: Optional[float] = None,
                 rounds: Optional[int] = None) -> None:
  """The channels as JSON (`privacy_report.json` of a run); with every channel noised, the joint epsilon after `rounds`."""
  report = {
      'summary': summary(found),
      'channels': [dict(dataclasses.asdict(c), covered_by_epsilon=c.covered_by_epsilon) for c in found],
  }
  if joint_epsilon is not None:
    report['joint_epsilon'] = {'epsilon': joint_epsilon, 'rounds': rounds, 'covers': 'every aggregation of a round'}
  with open(path, 'w') as file:
    json.dump(report, file, indent=1)


def _at(type_spec: tff.Type, placement) -> bool:
  return isinstance(type_spec, tff.FederatedType) and type_spec.placement == placement


def _flat_types(type_spec: tff.Type) -> list[tff.Type]:
  if isinstance(type_spec, tff.StructType):
    return [leaf for element in type_spec for leaf in _flat_types(element)]
  return [type_spec] if type_spec is not None else []


def _shapes(type_spec: tff.Type) -> Optional[tuple]:
  """The shapes of a type's tensors in order (dtypes aside), or None if it holds anything but tensors."""
  leaves = _flat_types(type_spec)
  if not all(isinstance(leaf, tff.TensorType) for leaf in leaves):
    return None
  return tuple(tuple(leaf.shape) for leaf in leaves)
