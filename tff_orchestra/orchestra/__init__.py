"""The Orchestra federated learner (Lubana et al., ICML 2022) in TFF.

Its names are imported on first use (`_lazy.py`): `OrchestraConfig` alone does
not load TensorFlow.
"""

from tff_orchestra import _lazy

_MODULES = {
    'ENCODERS': 'model',
    'OrchestraConfig': 'config',
    'OrchestraNetworks': 'model',
    'OrchestraParts': 'learner',
    'build_orchestra_parts': 'learner',
    'build_orchestra_process': 'learner',
    'global_centroids': 'learner',
    'prepare_client_dataset': 'learner',
    'register_encoder': 'model',
    'resnet18': 'model',
    'round_num': 'learner',
    'small_cnn': 'model',
}
__all__ = sorted(_MODULES)
__getattr__, __dir__ = _lazy.exports(__name__, _MODULES)
