"""The method registry and the shared networks' layout."""

import pytest

from tff_orchestra import methods
from tff_orchestra.methods import method as method_lib
from tff_orchestra.methods import simclr
from tff_orchestra.orchestra import OrchestraConfig
from tff_orchestra.orchestra.model import small_cnn


def test_builtin_methods_are_registered_and_a_users_can_be():
  assert sorted(methods.registered_methods()) == sorted(method_lib.BUILTIN_METHODS)
  with pytest.raises(ValueError, match='already registered'):
    methods.register_method('simclr', simclr.SimCLR())
  try:
    methods.register_method('my_simclr', simclr.SimCLR())
    assert methods.resolve_method('my_simclr').name == 'simclr'
  finally:
    method_lib._REGISTERED.pop('my_simclr', None)
  with pytest.raises(ValueError, match='method must be one of'):
    methods.resolve_method('moco')
  with pytest.raises(TypeError, match='SelfSupervisedMethod'):
    methods.register_method('thing', object())


def test_model_weights_hold_online_trainables_then_statistics_and_targets():
  networks = method_lib.Networks(small_cnn, (8, 8, 1), lambda f: method_lib.mlp(f, [(4, False, 'bn')], 'p'),
                                 heads={'h': method_lib.mlp(4, [(2, True, 'none')], 'h')}, target=True)
  weights = networks.model_weights()
  trainable = {v.ref() for v in weights.trainable}
  assert {v.ref() for v in networks.heads['h'].trainable_variables} <= trainable
  assert all(v.ref() not in trainable for v in networks.target_backbone.variables)
  assert len(weights.non_trainable) == (len(networks.backbone.non_trainable_variables)
                                        + len(networks.projector.non_trainable_variables)
                                        + len(networks.target_backbone.variables)
                                        + len(networks.target_projector.variables))
  with pytest.raises(ValueError, match='then must be'):
    method_lib.mlp(3, [(2, True, 'relu')], 'bad')
  assert OrchestraConfig().batch_size == 16
