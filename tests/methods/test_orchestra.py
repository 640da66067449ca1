"""Orchestra as a registered method: its networks are the learner's."""

from tff_orchestra.methods import orchestra as orchestra_method
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.model import OrchestraNetworks, small_cnn


def test_networks_are_orchestras():
  networks = orchestra_method.METHOD.networks(small_cnn, (8, 8, 1), OrchestraConfig(projection_dim=8))
  assert isinstance(networks, OrchestraNetworks) and networks.projector.output_shape == (None, 8)
