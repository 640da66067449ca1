"""Federated self-supervised methods in one learner: Orchestra and the paper's baselines (SimCLR, BYOL,
SimSiam, SpecLoss, rotation prediction), each trained with any model-update aggregation factory.

Its names are imported on first use (`_lazy.py`).
"""

from tff_orchestra import _lazy

_MODULES = {
    'BatchLossMethod': 'method',
    'Networks': 'method',
    'SelfSupervisedMethod': 'method',
    'build_learning_process': 'learner',
    'build_method_process': 'learner',
    'register_method': 'method',
    'registered_methods': 'method',
    'resolve_method': 'method',
}
__all__ = sorted(_MODULES)
__getattr__, __dir__ = _lazy.exports(__name__, _MODULES)
