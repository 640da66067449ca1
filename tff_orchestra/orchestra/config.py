"""`OrchestraConfig`: the learner's hyperparameters, with the reference's defaults.

Declared with `settings.setting`, so each field is also a `tff-orchestra train`
flag and a key of the `[orchestra]` section of a run file. No TensorFlow here:
the command line reads it to build its flags.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tff_orchestra.settings import InvalidSetting, check_fields, integer, number, setting


@dataclasses.dataclass(frozen=True)
class OrchestraConfig:
  """Orchestra's hyperparameters, with the reference's defaults."""

  num_global_clusters: int = setting(128, help='global centroids, shared by all clients', check=integer(1),
                                     aliases=('--global-clusters',))
  num_local_clusters: int = setting(16, help="centroids of a client's memory, sent to the server each round",
                                    check=integer(1), aliases=('--local-clusters',))
  memory_size: int = setting(128, help="projections a client's memory keeps (FIFO)", check=integer(1))
  projection_dim: int = setting(512, help='width of the projector and the centroids', check=integer(1))
  temperature: float = setting(0.1, help='softmax temperature of the clustering loss', check=number(above=0))
  ema_decay: float = setting(0.996, help="decay of the target network's moving average", check=number(minimum=0, below=1))
  local_epochs: int = setting(10, help='passes over its data a client makes each round', check=integer(1))
  client_learning_rate: float = setting(0.003, help="clients' SGD learning rate", check=number(above=0),
                                        aliases=('--learning-rate',))
  client_momentum: float = setting(0.9, help="clients' SGD momentum", check=number(minimum=0, below=1))
  client_weight_decay: float = setting(1e-4, help="clients' L2 weight decay", check=number(minimum=0))
  global_clustering_steps: int = setting(500, help="SGD steps of the server's centroid update", check=integer(1))
  global_clustering_learning_rate: float = setting(0.01, help="learning rate of the server's centroid update",
                                                   check=number(above=0))
  global_clustering_momentum: float = setting(0.9, help="momentum of the server's centroid update",
                                              check=number(minimum=0, below=1))
  global_clustering_weight_decay: float = setting(1e-4, help="weight decay of the server's centroid update",
                                                  check=number(minimum=0))
  max_clients_per_round: int = setting(1000, help='most clients in one round (sizes the server clustering)',
                                       check=integer(1), derived='run.clients_per_round')
  batch_size: int = setting(16, help="clients' batch size: each epoch reshuffles a client's examples into full batches",
                            check=integer(1), derived='data.batch_size')
  min_crop_area: Optional[float] = setting(
      None, help="smallest image area a random crop keeps (default: each view's reference value, 0.5 for Orchestra)",
      check=number(above=0, maximum=1))
  flip: bool = setting(True, help='random horizontal flips (--no-flip for digits)')
  jit_compile: bool = setting(
      False, help="compile the clients' learning step with XLA: plain TensorFlow's LocalTraining only; the learner "
      "refuses it, as TFF 0.87's worker does not compile it")
  seed: int = setting(0, help="seed of the learner's initialisation and augmentation", check=integer(0),
                      derived='run.seed')

  def __post_init__(self):
    check_fields(self)
    if self.num_local_clusters > self.memory_size:
      raise InvalidSetting(
          'OrchestraConfig.num_local_clusters', f'cannot exceed OrchestraConfig.memory_size ({self.memory_size})',
          self.num_local_clusters,
      )
