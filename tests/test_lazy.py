"""`_lazy.exports`: a package's names resolve on first use, and only then import their module."""

import subprocess
import sys

import pytest

from tff_orchestra import _lazy


def test_names_resolve_to_their_module_and_unknown_ones_raise():
  getattr_, dir_ = _lazy.exports('tff_orchestra.runtime', {'parse_worker_addresses': 'addresses'})
  from tff_orchestra.runtime.addresses import parse_worker_addresses  # pylint: disable=import-outside-toplevel

  assert getattr_('parse_worker_addresses') is parse_worker_addresses
  assert dir_() == ['parse_worker_addresses']
  with pytest.raises(AttributeError, match="module 'tff_orchestra.runtime' has no attribute 'nope'"):
    getattr_('nope')


def test_the_configuration_loads_without_tensorflow():
  program = (
      'import sys\n'
      'from tff_orchestra import orchestra, training\n'
      'orchestra.OrchestraConfig(); training.TrainConfig.build(output_dir="x")\n'
      "print('tensorflow' in sys.modules)"
  )
  done = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True, timeout=60)
  assert done.stdout.strip() == 'False', done.stderr[-2000:]
