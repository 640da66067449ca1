import numpy as np
import pytest
import tensorflow as tf

from tff_orchestra.aggregators import privacy_accounting as pa


@pytest.mark.parametrize('noise_multiplier', [0.3, 1.0, 5.0])
@pytest.mark.parametrize('sampling_probability', [None, 0.01, 0.5])
@pytest.mark.parametrize('rounds', [1, 10, 1000])
@pytest.mark.parametrize('target_delta', [1e-3, 1e-7])
def test_in_graph_epsilon_equals_dp_accounting(noise_multiplier, sampling_probability, rounds, target_delta):
  rdp = pa.rdp_per_round(noise_multiplier, sampling_probability)
  in_graph = pa.epsilon_in_graph(rdp, tf.constant(rounds, tf.int64), target_delta).numpy()
  expected = pa.epsilon_python(noise_multiplier, sampling_probability, rounds, target_delta)
  assert in_graph == pytest.approx(expected, rel=1e-9)


def test_no_rounds_spend_nothing_and_no_noise_is_infinite():
  rdp = pa.rdp_per_round(0.0, None)
  assert pa.epsilon_in_graph(rdp, tf.constant(0, tf.int64), 1e-5).numpy() == 0.0
  assert pa.epsilon_in_graph(rdp, tf.constant(1, tf.int64), 1e-5).numpy() == np.inf


@pytest.mark.parametrize('noise_multiplier', [0.0, 0.7, 3.0])
@pytest.mark.parametrize('sampling_probability', [None, 0.05])
@pytest.mark.parametrize('rounds_by_participants', [[0, 0, 0, 0], [5, 0, 0, 0], [0, 2, 0, 7], [1, 3, 10, 100]])
def test_in_graph_epsilon_by_participants_equals_dp_accounting(noise_multiplier, sampling_probability, rounds_by_participants):
  table = pa.rdp_by_participants(noise_multiplier, sampling_probability, expected_clients=3)
  assert table.shape == (4, len(pa.RDP_ORDERS)) and not table[0].any()
  in_graph = pa.epsilon_by_participants_in_graph(table, tf.constant(rounds_by_participants, tf.int64), 1e-5).numpy()
  event = pa.distributed_training_event(noise_multiplier, sampling_probability, rounds_by_participants)
  expected = pa.epsilon_of_event(event, 1e-5)
  assert in_graph == pytest.approx(expected, rel=1e-9) or in_graph == expected == np.inf


def test_distributed_noise_multipliers_are_the_shares_that_took_part():
  np.testing.assert_allclose(pa.distributed_noise_multipliers(2.0, 4), [0.0, 1.0, 2 * np.sqrt(0.5), 2 * np.sqrt(0.75), 2.0])
