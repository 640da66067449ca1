"""The training program behind `tff-orchestra train`, one job per module.

* `config.py`: `TrainConfig`, the sections of a run's settings; the plugins, aggregator and data it names.
* `sampling.py`: the clients of each round and the order of their examples.
* `checkpoints.py`: atomic checkpoints, the last two kept; corrupt ones skipped.
* `metrics.py`: one flat row per round in metrics.json/.csv and TensorBoard; the progress bar's text.
* `loop.py`: `run`: the output directory, the rounds, the evaluation and plots.

The names below are imported on first use (`_lazy.py`): the configuration alone does not load TensorFlow.
"""

from tff_orchestra import _lazy

_MODULES = {'ConfigError': 'config', 'TrainConfig': 'config', 'run': 'loop'}
__all__ = sorted(_MODULES)
__getattr__, __dir__ = _lazy.exports(__name__, _MODULES)
