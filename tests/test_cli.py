import argparse
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from tff_orchestra import cli


@pytest.mark.parametrize(
    'argv, message',
    [
        (['fedavg-demo', '--rounds', '0'], 'must be at least 1'),
        (['fedavg-demo', '--rounds', 'x'], "argument --rounds: expected an integer, got 'x'"),
        (['fedavg-demo', '--noise-multiplier', '-1'], 'must be a number >= 0'),
        (['fedavg-demo', '--noise-multiplier', 'y'], "argument --noise-multiplier: expected a number, got 'y'"),
        (['evaluate'], 'invalid choice'),
        ([], 'required'),
    ],
)
def test_bad_arguments_end_with_one_error_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('tff-orchestra')]
  assert len(error_lines) == 1 and message in error_lines[0]


def test_train_without_an_output_dir_is_one_error_line(capsys):
  assert cli.main(['train']) == 2
  assert capsys.readouterr().err.strip() == (
      'tff-orchestra: error: --output-dir is required (or output_dir in the [run] of a --config file)'
  )


def test_console_script_is_installed():
  script = os.path.join(os.path.dirname(sys.executable), 'tff-orchestra')
  done = subprocess.run([script, '--help'], capture_output=True, text=True, timeout=60)
  assert done.returncode == 0 and 'fedavg-demo' in done.stdout and 'train' in done.stdout


def test_version_names_this_package_and_tff(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--version'])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out.strip() == (
      f"tff-orchestra {metadata.version('tff_orchestra')} (TensorFlow Federated 0.87.0)")


@pytest.mark.parametrize('argv', [
    ['--version'], ['--help'], ['train', '--help'], ['train', '--alpha', 'x'], ['train', '--nope'],
    ['train', '--output-dir', 'unused', '--alpha', '0'],
])
def test_help_and_bad_flags_answer_without_tensorflow(argv):
  program = (
      'import sys\nfrom tff_orchestra import cli\n'
      f'try:\n  cli.main({argv!r})\nexcept SystemExit:\n  pass\n'
      "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'no tensorflow')"
  )
  done = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True, timeout=60)
  assert done.stdout.strip().splitlines()[-1] == 'no tensorflow', done.stderr[-2000:]


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys):
  from tff_orchestra.training import loop  # pylint: disable=import-outside-toplevel

  def fail(config, resume):
    raise RuntimeError('boom\nand the rest of a long message')

  monkeypatch.setattr(loop, 'run', fail)
  assert cli.main(['train', '--output-dir', 'unused', '--no-progress']) == 1
  assert capsys.readouterr().err.strip() == (
      'tff-orchestra: error: RuntimeError: boom ... (--debug shows the traceback)'
  )
  with pytest.raises(RuntimeError, match='boom'):
    cli.main(['train', '--output-dir', 'unused', '--no-progress', '--debug'])


def test_aggregators_lists_each_name_with_its_keys_defaults_and_an_example(capsys):
  assert cli.main(['aggregators']) == 0
  listing = capsys.readouterr().out
  assert listing.count('    example: --aggregator ') == listing.count('    keys: ') >= 10
  assert 'noise_multiplier (required), clip (required)' in listing  # gaussian_noise
  assert 'expected_clients_per_round=(--clients-per-round), population=(--num-clients)' in listing
  assert 'trim_fraction=0.2' in listing and 'in Python only: inner_factory, statistics_sum_factory' in listing


def test_every_option_says_its_default():
  parser = cli.build_parser()
  [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]  # pylint: disable=protected-access
  for name, command in commands.choices.items():
    for action in command._actions:  # pylint: disable=protected-access
      if action.help not in (argparse.SUPPRESS, None) and not isinstance(action, argparse._HelpAction):  # pylint: disable=protected-access
        assert re.search(r'\((default: .*|required|repeatable)\)$', action.help), (name, action.option_strings, action.help)
