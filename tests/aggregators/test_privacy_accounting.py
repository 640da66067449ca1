import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from tff_orchestra.aggregators import privacy_accounting as pa

SAMPLINGS = {
    'none': pa.Sampling(),
    'poisson 1%': pa.Sampling('poisson', 1000, 10),
    'poisson 50%': pa.Sampling('poisson', 6, 3),
    'fixed size 1%': pa.Sampling('fixed_size', 1000, 10),
    'fixed size 50%': pa.Sampling('fixed_size', 6, 3),
    'fixed size all': pa.Sampling('fixed_size', 3, 3),
}


@pytest.mark.parametrize('noise_multiplier', [0.3, 5.0])
@pytest.mark.parametrize('sampling', list(SAMPLINGS))
@pytest.mark.parametrize('rounds', [1, 1000])
@pytest.mark.parametrize('against_server', [False, True], ids=['amplified', 'against-server'])
def test_in_graph_epsilon_equals_dp_accounting(noise_multiplier, sampling, rounds, against_server):
  sampling = SAMPLINGS[sampling]
  rdp = pa.rdp_per_round(noise_multiplier, sampling, against_server)
  in_graph = pa.epsilon_in_graph(rdp, tf.constant(rounds, tf.int64), 1e-5).numpy()
  expected = pa.epsilon_python(noise_multiplier, sampling, rounds, 1e-5, against_server=against_server)
  assert in_graph == pytest.approx(expected, rel=1e-9)


def test_fixed_size_sampling_is_accounted_without_replacement_under_replace_one():
  # Issue 15, finding 1: N=1000, 10 per round, z=1, 20 rounds, delta=1e-5. Poisson accounting (what was
  # reported for a trainer that draws a fixed number) gives 1.07; the event the trainer runs gives 7.86.
  poisson, fixed = pa.Sampling('poisson', 1000, 10), pa.Sampling('fixed_size', 1000, 10)
  assert pa.epsilon_python(1.0, poisson, 20, 1e-5) == pytest.approx(1.0705, abs=1e-3)
  assert pa.epsilon_python(1.0, fixed, 20, 1e-5) == pytest.approx(7.8638, abs=1e-3)
  assert fixed.relation == dp_accounting.NeighboringRelation.REPLACE_ONE
  assert pa.round_event(1.0, fixed) == dp_accounting.SampledWithoutReplacementDpEvent(
      1000, 10, dp_accounting.GaussianDpEvent(0.5)  # replace-one: sensitivity 2 x clip
  )
  # Against the server, which sees who took part, there is no amplification: every round counts in full.
  assert pa.epsilon_python(1.0, poisson, 20, 1e-5, against_server=True) == pytest.approx(30.1266, abs=1e-3)
  assert pa.epsilon_python(1.0, fixed, 20, 1e-5, against_server=True) == pytest.approx(
      pa.epsilon_of_event(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(0.5), 20), 1e-5), rel=1e-12
  )


def test_all_clients_every_round_is_a_plain_gaussian_under_add_remove():
  everyone = pa.Sampling('fixed_size', 10, 10)
  assert not everyone.amplifies and everyone.relation == dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  assert pa.round_event(1.0, everyone) == dp_accounting.GaussianDpEvent(1.0)


def test_pld_accountant_is_tighter_and_refuses_what_it_cannot_account():
  poisson = pa.Sampling('poisson', 1000, 10)
  assert pa.epsilon_python(1.0, poisson, 20, 1e-5, accountant='pld') == pytest.approx(0.455, abs=2e-3)
  with pytest.raises(NotImplementedError, match="use accountant='rdp'"):
    pa.epsilon_python(1.0, pa.Sampling('fixed_size', 1000, 10), 20, 1e-5, accountant='pld')
  with pytest.raises(ValueError, match='accountant must be one of'):
    pa.epsilon_python(1.0, poisson, 20, 1e-5, accountant='moments')


@pytest.mark.parametrize(
    'args, match',
    [(('uniform', 10, 2), 'sampling must be one of'), (('poisson', 2, 10), 'population'), (('fixed_size', None, 2), 'population')],
)
def test_bad_sampling_is_refused(args, match):
  with pytest.raises((TypeError, ValueError), match=match):
    pa.Sampling(*args)


def test_no_rounds_spend_nothing_and_no_noise_is_infinite():
  rdp = pa.rdp_per_round(0.0, pa.Sampling())
  assert pa.epsilon_in_graph(rdp, tf.constant(0, tf.int64), 1e-5).numpy() == 0.0
  assert pa.epsilon_in_graph(rdp, tf.constant(1, tf.int64), 1e-5).numpy() == np.inf




def test_joint_epsilon_adds_the_rdp_of_mechanisms_on_the_same_clients_before_amplifying():
  """Two Gaussians on the same clients are one Gaussian of z = (z1**-2 + z2**-2)**-0.5."""
  z1, z2 = 1.0, 2.0
  combined = (z1**-2 + z2**-2) ** -0.5
  curves = [lambda order, z=z: order / (2 * z**2) for z in (z1, z2)]
  none = pa.joint_epsilon(curves, pa.Sampling(), 5, 1e-5)
  assert none == pytest.approx(pa.epsilon_python(combined, pa.Sampling(), 5, 1e-5), rel=1e-9)
  sampled = pa.Sampling('fixed_size', 1000, 10)
  half = [lambda order, z=z: order / (2 * (z / 2) ** 2) for z in (z1, z2)]  # replace-one
  joint = pa.joint_epsilon(half, sampled, 20, 1e-5)
  exact = pa.epsilon_python(combined, sampled, 20, 1e-5)
  assert exact <= joint <= 1.1 * exact
  assert pa.joint_epsilon(half, sampled, 20, 1e-5, against_server=True) > 3 * joint


def test_epsilon_of_stages_composes_factories_that_share_the_sampling():
  import tensorflow_federated as tff  # pylint: disable=import-outside-toplevel
  from tff_orchestra import aggregators as agg  # pylint: disable=import-outside-toplevel

  value_type = tff.TensorType(np.float32, [100])
  kwargs = dict(expected_clients_per_round=10, population=1000, sampling='fixed_size')
  update, statistics = agg.GaussianNoise(1.0, 1.0, **kwargs), agg.GaussianNoise(3.0, 1.0, **kwargs)
  both = pa.epsilon_of_stages([update, statistics], [value_type, value_type], 20, 1e-5)
  assert both > update.epsilon_after(20, value_type) and both > statistics.epsilon_after(20, value_type)
  other = agg.GaussianNoise(3.0, 1.0, expected_clients_per_round=10, population=1000)  # Poisson
  with pytest.raises(ValueError, match='the same sampling'):
    pa.epsilon_of_stages([update, other], [value_type, value_type], 20, 1e-5)
