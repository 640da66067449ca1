"""The Orchestra federated learner (Lubana et al., ICML 2022) in TFF."""

from tff_orchestra.orchestra.client_work import OrchestraConfig
from tff_orchestra.orchestra.learner import build_orchestra_process
from tff_orchestra.orchestra.learner import global_centroids
from tff_orchestra.orchestra.learner import prepare_client_dataset
from tff_orchestra.orchestra.learner import round_num
from tff_orchestra.orchestra.model import ENCODERS
from tff_orchestra.orchestra.model import OrchestraNetworks
from tff_orchestra.orchestra.model import register_encoder
from tff_orchestra.orchestra.model import resnet18
from tff_orchestra.orchestra.model import small_cnn

__all__ = [
    'ENCODERS',
    'OrchestraConfig',
    'OrchestraNetworks',
    'build_orchestra_process',
    'global_centroids',
    'prepare_client_dataset',
    'register_encoder',
    'resnet18',
    'round_num',
    'small_cnn',
]
