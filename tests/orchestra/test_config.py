"""`OrchestraConfig`: the reference's defaults, and every bad value refused with its name."""

import pytest

from tff_orchestra import settings
from tff_orchestra.orchestra.config import OrchestraConfig


def test_defaults_are_the_reference_hyperparameters():
  config = OrchestraConfig()
  assert (config.num_global_clusters, config.num_local_clusters, config.memory_size) == (128, 16, 128)
  assert (config.temperature, config.ema_decay, config.local_epochs) == (0.1, 0.996, 10)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(num_global_clusters=0), 'num_global_clusters'),
        (dict(memory_size=2.5), 'memory_size'),
        (dict(temperature=0.0), 'temperature'),
        (dict(ema_decay=1.0), 'ema_decay'),
        (dict(client_weight_decay=-1.0), 'client_weight_decay'),
        (dict(num_local_clusters=64, memory_size=32), 'cannot exceed'),
        (dict(temperature=float('inf')), 'temperature must be finite'),
        (dict(flip=1), 'flip must be true or false'),
    ],
)
def test_bad_config(kwargs, match):
  with pytest.raises(settings.InvalidSetting, match=match):
    OrchestraConfig(**kwargs)
