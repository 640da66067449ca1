"""The training program behind `tff-orchestra train`, one job per module.

* `config.py`: `TrainConfig`, its checks, the plugins, aggregator and data it names.
* `sampling.py`: the clients of each round and the order of their examples.
* `checkpoints.py`: atomic checkpoints, the last two kept; corrupt ones skipped.
* `metrics.py`: one flat row per round in metrics.json/.csv; the progress bar's text.
* `loop.py`: `run`: the output directory, the rounds, the evaluation and plots.
"""

from tff_orchestra.training.config import ConfigError
from tff_orchestra.training.config import TrainConfig
from tff_orchestra.training.loop import run

__all__ = ['ConfigError', 'TrainConfig', 'run']
