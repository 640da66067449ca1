"""The documentation site builds without a warning, and every shell command it shows is real.

The site is MkDocs (`mkdocs.yml`), built with --strict: a broken link or anchor, a page
missing from the navigation, or a docstring the API reference cannot read fails the
build. The shell blocks of the README and the docs are checked by what each command
is: `make` targets dry-run, `tff-orchestra train` commands parsed into the run they
would train (`--version` run), benchmark commands parsed by the script's own parser,
the install lines compared with the Makefile's, and the worker-host lines checked
against the worker binary (its path, its flags). Training and benchmark runs themselves
take minutes to hours: their smoke versions are in test_benchmarks.py and training/.
"""

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.test_docs_examples import PAGES, ROOT, blocks
from tff_orchestra import cli


def test_the_site_builds_with_no_warning(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir', str(tmp_path / 'site')],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env={'NO_MKDOCS_2_WARNING': '1', 'PATH': ''},
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'WARNING' not in done.stderr, done.stderr[-3000:]
  site = tmp_path / 'site'
  for page in ('index.html', 'guide/privacy.html', 'notebooks/01_custom_aggregations.html',
               'reference/aggregators.html', 'results/methods.png'):
    assert (site / page).is_file(), page
  # The API reference is generated from the docstrings, and the notebooks keep their outputs.
  reference = (site / 'reference/aggregators.html').read_text()
  assert 'GaussianNoise' in reference and 'expected_clients_per_round' in reference
  assert 'MeasuredProcessOutput' in (site / 'notebooks/01_custom_aggregations.html').read_text()


def test_every_relative_link_of_the_readme_leads_to_a_file():
  for target in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', (ROOT / 'README.md').read_text()):
    assert (ROOT / target).exists(), target


def test_the_readme_fits_in_two_minutes_of_reading():
  assert len((ROOT / 'README.md').read_text().splitlines()) < 200


def _commands(page):
  """The shell commands of a page's ```bash blocks, continuation lines joined, comments dropped."""
  commands = []
  for kind, body in blocks(page):
    if kind == 'bash':
      for line in body.replace('\\\n', ' ').splitlines():
        line = line.split(' #', 1)[0].strip()
        if line and not line.startswith('#'):
          commands.append(line)
  return commands


SHELL_COMMANDS = [(page, command) for page in PAGES for command in _commands(page)]
# The Makefile's install lines as one types them for one's own environment: not editable, no extras.
MAKEFILE_PIP_LINES = [
    re.sub(r"-e '\.\[[\w,]+\]'", '.', line) for line in re.findall(r'pip install --quiet (.*)', (ROOT / 'Makefile').read_text())
]


class _Parsed(Exception):
  """Raised by the patched parse_args: the benchmark's arguments parsed, nothing run."""


def _parse_benchmark(script, arguments, monkeypatch):
  monkeypatch.syspath_prepend(str(script.parent))  # as running the script puts its folder first
  spec = importlib.util.spec_from_file_location(f'_docs_{script.stem}', script)
  module = importlib.util.module_from_spec(spec)
  monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
  spec.loader.exec_module(module)
  parse_args = argparse.ArgumentParser.parse_args

  def parse_then_stop(parser, args=None, namespace=None):
    parse_args(parser, args, namespace)
    raise _Parsed

  monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', parse_then_stop)
  monkeypatch.setattr(sys, 'argv', [str(script), *arguments])
  with pytest.raises(_Parsed):
    module.main()


def _run_cli(*arguments):
  shown = io.StringIO()
  with contextlib.redirect_stdout(shown), contextlib.suppress(SystemExit):
    cli.main(list(arguments))
  return shown.getvalue()


@pytest.mark.parametrize('page, command', SHELL_COMMANDS, ids=[f'{p.name}:{c[:50]}' for p, c in SHELL_COMMANDS])
def test_each_shell_command_shown_is_one_that_works(page, command, monkeypatch):
  words = shlex.split(command)
  if words[0] == 'make':
    assert subprocess.run(['make', '-n', *words[1:]], cwd=ROOT, capture_output=True).returncode == 0, command
  elif words[:2] == ['tff-orchestra', 'train']:
    args = cli.build_parser().parse_args([word for word in words[1:] if word != '...'])
    cli.train_config(args).check_registered()  # what `train` checks before any work
  elif words == ['tff-orchestra', '--version']:
    assert _run_cli('--version') == cli.version_text() + '\n'
  elif words[0] == '.venv/bin/python' and words[1].startswith('benchmarks/'):
    _parse_benchmark(ROOT / words[1], words[2:], monkeypatch)
  elif words[0] == 'pip':
    # The Makefile's install lines (run by every `make test`), for one's own environment.
    assert ' '.join(words[2:]) in MAKEFILE_PIP_LINES, command
  elif words[0] == 'python3.11':
    assert words[1:4] == ['-m', 'venv', '.venv'], command
  elif words[0].startswith('WORKER=$('):
    # Where the worker binary is: the command substitution run as written (this interpreter for .venv's).
    inner = command[len('WORKER=$('):-1].replace('.venv/bin/python', shlex.quote(sys.executable), 1)
    path = subprocess.run(inner, shell=True, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert os.access(path, os.X_OK), path
  elif words[0] == '$WORKER':
    # Every flag given is one the worker binary has (its --helpfull lists them); starting it is tests/runtime's job.
    from tff_orchestra import runtime
    listed = subprocess.run([runtime.worker_binary_path(), '--helpfull'], capture_output=True, text=True, timeout=120)
    for flag in words[1:]:
      assert f"{flag.split('=')[0]} (" in listed.stdout + listed.stderr, flag
  else:
    pytest.fail(f'{page.name}: no check for the command {command!r}')


def test_the_recorded_make_run_output_shows_what_this_code_prints_for_that_run():
  """The parts of the getting-started page's `make run` output that no randomness moves:
  the clients' label skew, and the raw-pixels row of the evaluation (the Orchestra row
  moves with the DP noise, as the page says)."""
  from tff_orchestra import evaluation, training
  from tff_orchestra.data import format_partition_summary, partition_summary
  from tff_orchestra.training import config as config_lib

  [recorded] = [body for kind, body in blocks(ROOT / 'docs' / 'getting-started.md') if kind == 'text' and 'raw pixels' in body]
  config = training.TrainConfig.from_toml(str(ROOT / 'examples' / 'digits.toml'))
  split = config_lib.load_split(config)
  skew = format_partition_summary(partition_summary(split.train_labels, split.partitions))
  assert skew in recorded, skew
  row = evaluation.evaluate_features(
      'raw pixels', evaluation.pixel_features(split.train_images), split.train_labels,
      evaluation.pixel_features(split.test_images), split.test_labels,
      labels_per_class=config.evaluation.labels_per_class, seed=config.run.seed)
  [line] = [line for line in recorded.splitlines() if line.startswith('raw pixels')]
  shown = [float(number) for number in re.findall(r'\d+\.\d+', line)]
  computed = [100 * row['linear_probe'], 100 * row['few_label_probe'], 100 * row['knn'], row['nmi'], row['ari']]
  # As the table rounds them: accuracies in % to 0.1, NMI and ARI to 0.001.
  assert shown[:3] == pytest.approx(computed[:3], abs=0.0501) and shown[3:] == pytest.approx(computed[3:], abs=0.000501), (
      shown, computed)
