"""The fence: TFF's private modules are imported by `runtime/_tff_internal.py` alone."""

import os
import pathlib
import subprocess
import sys

from tff_orchestra.runtime import _tff_internal

PACKAGE = pathlib.Path(_tff_internal.__file__).resolve().parents[1]


def test_only_the_fence_imports_tff_private_modules():
  importers = sorted(
      str(path.relative_to(PACKAGE))
      for path in PACKAGE.rglob('*.py')
      if 'tensorflow_federated.python' in path.read_text()
  )
  assert importers == ['runtime/_tff_internal.py']


def test_every_fenced_name_resolves():
  for name in ('RuntimeErrorContext', 'CompilerPipeline', 'split_value_into_subrounds', 'repackage_partitioned_values'):
    assert callable(getattr(_tff_internal, name)), name


def _environment_changed_by(imports):
  """The variables (and values) that importing `imports` in a fresh interpreter adds or changes."""
  script = (
      f'import os; before = dict(os.environ); import {imports}; '
      'print(sorted((k, os.environ.get(k)) for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))'
  )
  environment = {key: value for key, value in os.environ.items() if key != 'TF_CPP_MIN_LOG_LEVEL'}
  done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300, env=environment)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout.strip().splitlines()[-1]


def test_importing_the_package_changes_no_environment_variable_tensorflow_does_not():
  ours = _environment_changed_by('tff_orchestra, tff_orchestra.aggregators, tff_orchestra.orchestra, tff_orchestra.runtime')
  assert ours == _environment_changed_by('tensorflow_federated')  # TensorFlow sets TF_CPP_MIN_LOG_LEVEL itself
