"""Aggregators by name, for `--aggregator NAME[:KEY=VALUE,...]` and run configuration files.

A user's factory is registered once and is then usable wherever ours are:

    # my_aggregators.py
    from tff_orchestra import aggregators as agg
    agg.register_aggregator('geometric_median', GeometricMedianFactory)

    tff-orchestra train --plugin my_aggregators --aggregator geometric_median:iterations=4 ...

A name maps to a builder: any callable that takes the spec's keys as keyword
arguments and returns a TFF aggregation factory (a factory class will do). The
spec's values are Python literals (`0.5`, `True`, `'x'`), else strings.
`run_defaults` fills a key the spec leaves out from the run (`RunContext`); `named_values` turns a word into an object (`clip=adaptive`). The
built-in names are registered the same way, below. The specs of a run are
chained in order (`chain`), so the run's model aggregator yields the mean.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import tensorflow_federated as tff

from tff_orchestra.aggregators.chain import chain
from tff_orchestra.aggregators.cluster_quality import ClusterQualityWeighting
from tff_orchestra.aggregators.composition import Factory, is_factory
from tff_orchestra.aggregators.coordinate_median import CoordinateMedian
from tff_orchestra.aggregators.distributed_discrete_gaussian import DistributedDiscreteGaussian
from tff_orchestra.aggregators import privacy_accounting
from tff_orchestra.aggregators.gaussian_noise import AdaptiveClip, GaussianNoise, secure_integer_sum
from tff_orchestra.aggregators.krum import MultiKrum
from tff_orchestra.aggregators.median_norm_clipping import MedianNormClipping
from tff_orchestra.aggregators.secure_fixed_point import SecureFixedPointSum
from tff_orchestra.aggregators.trimmed_mean import TrimmedMean

_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]*\Z')


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What a builder may take from the run for a key its spec leaves out.

  `client_sampling` is how the run draws its clients: `tff-orchestra train`
  draws `clients_per_round` of `num_clients` without replacement
  (`training/sampling.py`), so a DP stage accounts `'fixed_size'` sampling.
  """

  clients_per_round: int
  num_clients: int
  seed: int
  client_sampling: str = 'fixed_size'


_RUN_FIELDS = tuple(field.name for field in dataclasses.fields(RunContext))


@dataclasses.dataclass(frozen=True)
class RegisteredAggregator:
  """A name's builder and how its options are completed."""

  name: str
  builder: Callable[..., Factory]
  run_defaults: Mapping[str, str]
  named_values: Mapping[str, Mapping[str, Callable[[], Any]]]
  example: Optional[str] = None

  @property
  def key_defaults(self) -> dict[str, Any]:
    """`{key: default}` of the builder's keyword arguments (`inspect.Parameter.empty`: required)."""
    try:
      parameters = inspect.signature(self.builder).parameters.values()
    except (TypeError, ValueError):
      return {}
    return {p.name: p.default for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

  @property
  def keys(self) -> list[str]:
    """The builder's keyword arguments."""
    return list(self.key_defaults)

  @property
  def summary(self) -> str:
    """The first line of the builder's docstring."""
    return (inspect.getdoc(self.builder) or '').split('\n')[0]

  def build(self, options: Mapping[str, Any], context: Optional[RunContext]) -> Factory:
    options = dict(options)
    for key, words in self.named_values.items():
      if isinstance(options.get(key), str) and options[key] in words:
        options[key] = words[options[key]]()
    if context is not None:
      for key, field in self.run_defaults.items():
        options.setdefault(key, getattr(context, field))
    factory = self.builder(**options)
    if not is_factory(factory):
      raise TypeError(f'the builder of {self.name!r} returned {type(factory).__name__}, not an aggregation factory')
    if context is not None:
      _check_fits_the_run(self.name, factory, context)
    return factory


def _check_fits_the_run(name: str, factory: Factory, context: RunContext) -> None:
  """Refuses a stage that every round of the run would fail, or whose accounting assumes other sampling."""
  limit = getattr(factory, 'max_clients', None)
  if isinstance(limit, int) and limit < context.clients_per_round:
    raise ValueError(
        f'{name}: max_clients={limit} is below run.clients_per_round ({context.clients_per_round}): '
        'every round would fail; raise max_clients or leave it out'
    )
  sampling = getattr(factory, 'sampling', None)
  if isinstance(sampling, privacy_accounting.Sampling) and sampling.scheme != privacy_accounting.NO_SAMPLING:
    run = privacy_accounting.Sampling(context.client_sampling, context.num_clients, context.clients_per_round)
    if sampling != run:
      raise ValueError(
          f'{name}: its accounting assumes {sampling.describe()}, but the run draws {run.describe()}; '
          'leave population and sampling out (they default to the run\'s)'
      )


_REGISTRY: dict[str, RegisteredAggregator] = {}


def register_aggregator(
    name: str,
    builder: Callable[..., Factory],
    *,
    run_defaults: Optional[Mapping[str, str]] = None,
    named_values: Optional[Mapping[str, Mapping[str, Callable[[], Any]]]] = None,
    example: Optional[str] = None,
    replace: bool = False,
) -> Callable[..., Factory]:
  """Makes `name` usable in `--aggregator` specs and run configurations; returns `builder`.

  Args:
    name: Letters, digits, `_`, `.`, `-`; not a registered name unless `replace`.
    builder: Takes the spec's keys as keyword arguments, returns a factory.
    run_defaults: `{key: run field}` for keys a spec may leave out, with run
      fields those of `RunContext`.
    named_values: `{key: {word: make}}`: `key=word` in a spec passes `make()`.
    example: A spec that builds, shown by `tff-orchestra aggregators`.
    replace: Replace a registered builder of the same name.

  Raises:
    TypeError, ValueError: A bad name or builder, or a name already taken.
  """
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f"name must be letters, digits, '_', '.' or '-' (not starting with a digit), got {name!r}")
  if name in _REGISTRY and not replace:
    raise ValueError(f'aggregator {name!r} is already registered; pass replace=True to replace it')
  if not callable(builder):
    raise TypeError(f'builder must be a callable returning an aggregation factory, got {type(builder).__name__}')
  run_defaults = dict(run_defaults or {})
  for key, field in run_defaults.items():
    if field not in _RUN_FIELDS:
      raise ValueError(f'run_defaults[{key!r}] must be one of {_RUN_FIELDS}, got {field!r}')
  named_values = {key: dict(words) for key, words in (named_values or {}).items()}
  if example is not None and parse_spec(example)[0] != name:
    raise ValueError(f'example must be a spec of {name!r}, got {example!r}')
  _REGISTRY[name] = RegisteredAggregator(
      name, builder, types.MappingProxyType(run_defaults), types.MappingProxyType(named_values), example
  )
  return builder


def registered_aggregators() -> Mapping[str, RegisteredAggregator]:
  """Every registered name (built-in and users'), read-only."""
  return types.MappingProxyType(dict(_REGISTRY))


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """`'name'` or `'name:key=value,key=value'` -> (name, options); values are Python literals or strings."""
  name, _, arguments = spec.partition(':')
  options = {}
  for item in filter(None, (part.strip() for part in arguments.split(','))):
    key, equals, text = item.partition('=')
    if not equals or not key.strip():
      raise ValueError(f'aggregator {spec!r}: expected key=value, got {item!r}')
    try:
      options[key.strip()] = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      options[key.strip()] = text.strip()
  return name.strip(), options


def build_stage(spec: str, context: Optional[RunContext] = None) -> Factory:
  """The factory for one spec; ValueError naming the spec if it cannot be built."""
  name, options = parse_spec(spec)
  if name not in _REGISTRY:
    raise ValueError(f'unknown aggregator {name!r}; choose from {", ".join(sorted(_REGISTRY))}')
  try:
    return _REGISTRY[name].build(options, context)
  except (TypeError, ValueError) as error:
    raise ValueError(f'aggregator {spec!r}: {error}') from error


def build_model_aggregator(specs: Sequence[str], context: Optional[RunContext] = None) -> Factory:
  """The specs' stages chained in data-flow order (none: `tff.aggregators.MeanFactory()`).

  The result yields the mean of the client updates, as `chain`'s always does.
  """
  if not specs:
    return tff.aggregators.MeanFactory()
  stages = [build_stage(spec, context) for spec in specs]
  try:
    return chain(*stages)
  except (TypeError, ValueError) as error:
    raise ValueError(f'aggregators {list(specs)}: {error}') from error


def _adaptive_secure_bound() -> tff.templates.EstimationProcess:
  """The 95th percentile of the clients' largest |coordinate|, estimated with secure sums."""
  return tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=1.0, target_quantile=0.95, learning_rate=1.0, secure_estimation=True
  )


register_aggregator('mean', tff.aggregators.MeanFactory, example='mean')
register_aggregator('cluster_quality', ClusterQualityWeighting, run_defaults={'seed': 'seed'},
                    example='cluster_quality:num_clusters=4,robust=True')
register_aggregator(
    'gaussian_noise', GaussianNoise,
    run_defaults={
        'expected_clients_per_round': 'clients_per_round', 'population': 'num_clients', 'sampling': 'client_sampling',
    },
    named_values={'clip': {'adaptive': AdaptiveClip}},
    example='gaussian_noise:noise_multiplier=1.0,clip=1.0,max_epsilon=10',
)
register_aggregator('secure_integer_sum', secure_integer_sum, example='secure_integer_sum')
register_aggregator(
    'distributed_discrete_gaussian', DistributedDiscreteGaussian,
    run_defaults={'expected_clients_per_round': 'clients_per_round'},
    example='distributed_discrete_gaussian:noise_multiplier=1.0,clip=1.0,min_clients=2',
)
register_aggregator(
    'secure_sum', SecureFixedPointSum,
    run_defaults={'max_clients': 'clients_per_round'},
    named_values={'bound': {'adaptive': _adaptive_secure_bound}},
    example='secure_sum:bound=adaptive,bits=20',
)
register_aggregator('median', CoordinateMedian, example='median')
register_aggregator('trimmed_mean', TrimmedMean, example='trimmed_mean:trim_fraction=0.1')
register_aggregator('multi_krum', MultiKrum, example='multi_krum:num_byzantine=2')
register_aggregator('median_norm_clipping', MedianNormClipping, example='median_norm_clipping:multiplier=2.0')
