"""Dropouts: rounds with fewer clients than expected, for every factory of the library.

Each factory aggregates exactly the clients that took part. The DP accountant
counts rounds for central noise (its noise does not depend on who took part),
and charges distributed-noise rounds at the noise they really had (see the
README on what dropouts do to the guarantee).
"""

import warnings

import dp_accounting
import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg
from tff_orchestra.aggregators import privacy_accounting

EXPECTED = 4
POISSON = privacy_accounting.Sampling('poisson', 100, EXPECTED)
CLIENTS_PER_ROUND = (4, 2, 3, 1)  # one full round, then dropouts
VALUE = tff.TensorType(np.float32, [3])
WEIGHT = tff.TensorType(np.float32)


def _values(clients: int) -> list[np.ndarray]:
  return [np.array([1.0, -2.0, 0.5], np.float32) * (client + 1) for client in range(clients)]


def _chain():
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    return agg.chain(
        agg.ClusterQualityWeighting(2, sketch_dim=16),
        agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=EXPECTED),
        agg.SecureFixedPointSum(100.0, bits=30, max_clients=EXPECTED),
    )


@pytest.mark.parametrize(
    'name, factory, weighted, expected_result',
    [
        ('secure_sum', agg.SecureFixedPointSum(10.0, bits=30, max_clients=EXPECTED), False,
         lambda values: np.sum(values, axis=0)),
        ('gaussian_noise_sum', agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=EXPECTED, output='sum'), False,
         lambda values: np.sum(values, axis=0)),
        # A fixed denominator, as DP-FedAvg: the mean shrinks when clients drop out.
        ('gaussian_noise_mean',
         agg.GaussianNoise(0.0, clip=100.0, expected_clients_per_round=EXPECTED, output='mean'), False,
         lambda values: np.sum(values, axis=0) / EXPECTED),
        ('cluster_quality', agg.ClusterQualityWeighting(2, sketch_dim=16), True, None),
        ('chain', _chain(), True, None),
    ],
)
def test_every_factory_aggregates_who_took_part(name, factory, weighted, expected_result):
  del name
  process = factory.create(VALUE, WEIGHT) if weighted else factory.create(VALUE)
  state = process.initialize()
  for clients in CLIENTS_PER_ROUND:
    values = _values(clients)
    if weighted:
      # Identical updates: every quality is the same, so the weighted mean is the value.
      values = [values[-1]] * clients
      output = process.next(state, values, [1.0] * clients)
      np.testing.assert_allclose(output.result, values[-1], rtol=1e-5, atol=1e-5)
    else:
      output = process.next(state, values)
      np.testing.assert_allclose(output.result, expected_result(values), rtol=1e-5, atol=1e-5)
    state = output.state


def test_central_noise_is_accounted_by_rounds_not_participants():
  factory = agg.GaussianNoise(1.0, clip=1.0, expected_clients_per_round=EXPECTED, population=100)
  process = factory.create(VALUE)
  state = process.initialize()
  for clients in CLIENTS_PER_ROUND:
    output = process.next(state, _values(clients))
    state = output.state
  expected = privacy_accounting.epsilon_python(1.0, POISSON, len(CLIENTS_PER_ROUND), 1e-5)
  assert output.measurements['epsilon'] == pytest.approx(expected, rel=1e-6)
  assert output.measurements['rounds'] == len(CLIENTS_PER_ROUND)


def test_distributed_noise_is_accounted_at_the_noise_each_round_really_had():
  factory = agg.GaussianNoise(
      1.0, clip=1.0, placement='distributed', expected_clients_per_round=EXPECTED, population=100
  )
  process = factory.create(VALUE)
  state = process.initialize()
  for clients in CLIENTS_PER_ROUND:
    output = process.next(state, _values(clients))
    state = output.state
    assert output.measurements['noise_stddev'] == pytest.approx(np.sqrt(clients / EXPECTED))
  assert list(state['rounds_by_participants']) == [0, 1, 1, 1, 1]
  event = factory.dp_event(state)
  assert event == privacy_accounting.distributed_training_event(1.0, POISSON, [0, 1, 1, 1, 1])
  by_hand = dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(privacy_accounting.round_event(np.sqrt(m / EXPECTED), POISSON), 1)
      for m in (1, 2, 3, 4)
  ])
  expected = privacy_accounting.epsilon_of_event(by_hand, 1e-5)
  assert output.measurements['epsilon'] == pytest.approx(expected, rel=1e-6)
  assert factory.epsilon(state) == pytest.approx(expected, rel=1e-6)
  full_noise = privacy_accounting.epsilon_python(1.0, POISSON, len(CLIENTS_PER_ROUND), 1e-5)
  assert expected > 1.5 * full_noise  # what the accountant used to report: too little


def test_a_distributed_round_without_participants_spends_nothing():
  factory = agg.GaussianNoise(1.0, clip=1.0, placement='distributed', expected_clients_per_round=EXPECTED)
  process = factory.create(VALUE)
  output = process.next(process.initialize(), [])
  assert list(output.state['rounds_by_participants']) == [1, 0, 0, 0, 0]
  assert output.measurements['epsilon'] == 0.0 == factory.epsilon(output.state)
