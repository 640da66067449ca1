"""Composable TFF aggregation factories and the federated Orchestra learner.

Importing the package changes nothing in the process: the `tff-orchestra`
command and the notebooks quieten TensorFlow's start-up logs themselves.
"""

__version__ = '0.1.0'
