"""Orchestra as a registered method: its networks and `orchestra.build_orchestra_process`."""

from __future__ import annotations

from tff_orchestra.methods.method import SelfSupervisedMethod
from tff_orchestra.orchestra.learner import build_orchestra_process
from tff_orchestra.orchestra.model import OrchestraNetworks


class Orchestra(SelfSupervisedMethod):
  """Lubana et al. 2022: clustering against global centroids, plus the degeneracy (rotation) loss."""

  name = 'orchestra'

  def networks(self, encoder_fn, input_shape, config):
    return OrchestraNetworks(encoder_fn, input_shape, config.projection_dim)

  def build_process(self, input_shape, **kwargs):
    return build_orchestra_process(input_shape, **kwargs)


METHOD = Orchestra()
