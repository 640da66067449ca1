"""Aggregators by name: specs, run defaults, users' registrations, and CLI words equal to Python words."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tests.aggregators.testing import CountingSumFactory
from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import registry

CONTEXT = registry.RunContext(clients_per_round=3, num_clients=10, seed=7)
VALUE = tff.TensorType(np.float32, [2])
VALUES = [np.array([1.0, 2.0], np.float32), np.array([2.0, 3.0], np.float32), np.array([3.0, 4.0], np.float32)]


@pytest.fixture
def own_registry(monkeypatch):
  """Registrations made by a test do not outlive it."""
  monkeypatch.setattr(registry, '_REGISTRY', dict(registry._REGISTRY))  # pylint: disable=protected-access


def test_parse_spec():
  assert registry.parse_spec('gaussian_noise:clip=adaptive,placement=distributed, noise_multiplier=0.5') == (
      'gaussian_noise', {'clip': 'adaptive', 'placement': 'distributed', 'noise_multiplier': 0.5}
  )
  assert registry.parse_spec('mean') == ('mean', {})
  with pytest.raises(ValueError, match="expected key=value, got 'bits'"):
    registry.parse_spec('secure_sum:bits')


def test_run_defaults_and_named_values_complete_a_spec():
  noise = registry.build_stage('gaussian_noise:noise_multiplier=0.1,clip=adaptive', CONTEXT)
  assert repr(noise) == "GaussianNoise(noise_multiplier=0.1, clip=AdaptiveClip(initial_clip=0.1, target_quantile=0.5, learning_rate=0.2, clipped_count_stddev=None), expected_clients_per_round=3, population=10, sampling='fixed_size')"
  assert registry.build_stage('cluster_quality', CONTEXT).replace().__repr__() == 'ClusterQualityWeighting(seed=7)'
  secure = registry.build_stage('secure_sum:bound=adaptive', CONTEXT)
  assert secure.max_clients == 3
  assert registry.build_stage('secure_sum:max_clients=9', CONTEXT).max_clients == 9  # given keys win


def test_a_noise_stage_accounts_the_sampling_the_run_does():
  # The trainer draws clients_per_round of num_clients without replacement (training/sampling.py).
  noise = registry.build_stage('gaussian_noise:noise_multiplier=1.0,clip=1.0', CONTEXT)
  assert noise.sampling == agg.Sampling('fixed_size', 10, 3)
  for spec, assumed in (
      ('gaussian_noise:noise_multiplier=1.0,clip=1.0,sampling=poisson', 'Poisson sampling, q = 3/10'),
      ('gaussian_noise:noise_multiplier=1.0,clip=1.0,population=1000', '3 of 1000 clients drawn without replacement'),
  ):
    with pytest.raises(ValueError, match=f'its accounting assumes {assumed}.*but the run draws 3 of 10 clients'):
      registry.build_stage(spec, CONTEXT)
  no_amplification = registry.build_stage('gaussian_noise:noise_multiplier=1.0,clip=1.0,population=None', CONTEXT)
  assert no_amplification.sampling == agg.Sampling()  # conservative: allowed


CLI_AND_PYTHON = [
    (
        ('cluster_quality:num_clusters=2,sketch_dim=16', 'gaussian_noise:noise_multiplier=0.0,clip=100.0',
         'secure_integer_sum'),
        lambda: agg.chain(
            agg.ClusterQualityWeighting(2, sketch_dim=16, seed=7),
            agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=3),
            agg.secure_integer_sum(),
        ),
    ),
    (('gaussian_noise:noise_multiplier=0.0,clip=10.0',), lambda: agg.GaussianNoise(0.0, 10.0, expected_clients_per_round=3)),
    (('gaussian_noise:noise_multiplier=0.0,clip=10.0,output=sum', 'secure_integer_sum:bound=1000000000'),
     lambda: agg.chain(agg.GaussianNoise(0.0, 10.0, output='sum', expected_clients_per_round=3),
                       agg.secure_integer_sum(10**9))),
    (('secure_sum:bits=20,bound=5.0',), lambda: agg.chain(agg.SecureFixedPointSum(5.0, bits=20, max_clients=3))),
    ((), tff.aggregators.MeanFactory),
]


@pytest.mark.filterwarnings('ignore::UserWarning')
@pytest.mark.parametrize('specs, python', CLI_AND_PYTHON, ids=lambda x: '+'.join(x) if isinstance(x, tuple) else None)
def test_cli_words_build_what_python_words_build_and_average(specs, python):
  from_cli, from_python = registry.build_model_aggregator(specs, CONTEXT), python()
  assert type(from_cli) is type(from_python)
  results = []
  for factory in (from_cli, from_python):
    process = agg.as_model_aggregator(factory).create(VALUE, tff.TensorType(np.float32))
    state = process.initialize()
    for _ in range(2):  # in round 2 cluster qualities scale the weights
      output = process.next(state, VALUES, [1.0, 1.0, 1.0])
      state = output.state
      results.append(output.result)
  np.testing.assert_allclose(results[:2], results[2:], atol=1e-5)
  np.testing.assert_allclose(results[0], [2.0, 3.0], atol=1e-4)  # the mean, never the sum


def test_a_users_factory_registers_and_chains(own_registry):
  del own_registry

  def counting_sum():
    """Sums, and counts its rounds."""
    return CountingSumFactory()

  assert agg.register_aggregator('counting_sum', counting_sum) is counting_sum
  entry = agg.registered_aggregators()['counting_sum']
  assert entry.summary == 'Sums, and counts its rounds.' and entry.keys == []
  factory = registry.build_model_aggregator(['gaussian_noise:noise_multiplier=0.0,clip=10.0', 'counting_sum'], CONTEXT)
  process = factory.create(VALUE)
  output = process.next(process.initialize(), VALUES)
  np.testing.assert_allclose(output.result, [2.0, 3.0])
  assert output.measurements['dp']['counted'] == 42.0 and output.state['inner_agg'] == 1


@pytest.mark.parametrize(
    'args, kwargs, error, match',
    [
        (('mean', tff.aggregators.MeanFactory), {}, ValueError, "'mean' is already registered; pass replace=True"),
        (('9lives', tff.aggregators.MeanFactory), {}, ValueError, 'name must be'),
        (('x', 3), {}, TypeError, 'builder must be a callable'),
        (('x', tff.aggregators.MeanFactory), dict(run_defaults={'k': 'rounds'}), ValueError, r"run_defaults\['k'\]"),
        (('x', tff.aggregators.MeanFactory), dict(example='mean'), ValueError, "example must be a spec of 'x'"),
    ],
)
def test_bad_registrations(own_registry, args, kwargs, error, match):
  del own_registry
  with pytest.raises(error, match=match):
    agg.register_aggregator(*args, **kwargs)


def test_bad_specs_name_the_spec(own_registry):
  del own_registry
  agg.register_aggregator('not_a_factory', lambda: 'mean')
  with pytest.raises(ValueError, match="unknown aggregator 'geometric_median'; choose from"):
    registry.build_stage('geometric_median', CONTEXT)
  with pytest.raises(ValueError, match="aggregator 'not_a_factory'.*returned str"):
    registry.build_stage('not_a_factory', CONTEXT)
  with pytest.raises(ValueError, match=r"aggregator 'gaussian_noise:noise_multiplier=1.0,clip=1.0,expected_clients_per_round=None'.*output='mean'"):
    registry.build_stage('gaussian_noise:noise_multiplier=1.0,clip=1.0,expected_clients_per_round=None', CONTEXT)
  with pytest.raises(ValueError, match=r"aggregators \['mean', 'secure_sum'\].*takes no inner factory"):
    registry.build_model_aggregator(['mean', 'secure_sum'], CONTEXT)


@pytest.mark.parametrize('spec, expected', [
    ('median', agg.CoordinateMedian), ('trimmed_mean:trim_fraction=0.1', agg.TrimmedMean),
    ('multi_krum:num_byzantine=2', agg.MultiKrum), ('median_norm_clipping:multiplier=2.0', agg.MedianNormClipping),
])
def test_robust_estimates_are_registered(spec, expected):
  assert isinstance(registry.build_stage(spec, CONTEXT), expected)


@pytest.mark.parametrize('name', sorted(registry.registered_aggregators()))
def test_every_built_in_name_has_an_example_that_builds(name):
  entry = registry.registered_aggregators()[name]
  assert entry.example and registry.parse_spec(entry.example)[0] == name
  assert registry.is_factory(registry.build_stage(entry.example, CONTEXT))
