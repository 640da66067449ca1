"""Dropouts: rounds with fewer clients than expected, for every factory of the library.

Each factory aggregates exactly the clients that took part. The DP accountant
counts rounds for central noise (its noise does not depend on who took part),
and distributed noise withholds a round with fewer than `min_clients`
participants and charges every other round alike (see the README on what
dropouts do to the guarantee).
"""

import warnings

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_orchestra import aggregators as agg

EXPECTED = 4
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
        agg.secure_integer_sum(),
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
  assert output.measurements['epsilon'] == pytest.approx(factory.epsilon_after(len(CLIENTS_PER_ROUND), VALUE), rel=1e-9)
  assert output.measurements['rounds'] == len(CLIENTS_PER_ROUND)


def test_distributed_noise_withholds_rounds_below_min_clients_and_charges_the_others_alike():
  # Each released round is accounted at the noise of min_clients honest clients, however many took part.
  factory = agg.DistributedDiscreteGaussian(1.0, 1.0, expected_clients_per_round=EXPECTED, min_clients=2, output='sum')
  process = factory.create(VALUE)
  state = process.initialize()
  for clients in CLIENTS_PER_ROUND + (0,):
    output = process.next(state, _values(clients))
    state = output.state
    assert output.measurements['participants'] == clients
    assert output.measurements['released'] == (clients >= 2)
    if clients < 2:
      np.testing.assert_array_equal(output.result, 0.0)
      assert output.measurements['noise_stddev'] == 0.0
  assert state['rounds'] == 3
  assert output.measurements['epsilon'] == pytest.approx(factory.epsilon_after(3, VALUE), rel=1e-9)
