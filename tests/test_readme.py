"""The README's examples run, and print what the README says they print.

Every ```python block runs, in order, in one fresh interpreter; the ```text block
right after a python block must match what that block printed, numbers to 1e-3
(stochastic rounding moves the last digits). ```py blocks are illustrative only.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
BLOCK = re.compile(r'```(python|text|py|bash)\n(.*?)```', re.S)
NUMBER = re.compile(r'-?\d+\.?\d*(?:e[-+]?\d+)?')
MARKER = '@@block-{}@@'


def _examples():
  """(code, expected output or None) for each python block."""
  blocks = BLOCK.findall(README.read_text())
  examples = []
  for index, (kind, body) in enumerate(blocks):
    if kind == 'python':
      following = blocks[index + 1] if index + 1 < len(blocks) else ('', '')
      examples.append((body, following[1] if following[0] == 'text' else None))
  return examples


def _same_up_to_numbers(actual, expected):
  # numpy pads numbers to equal width, so whitespace is not compared.
  if ''.join(NUMBER.sub('#', actual).split()) != ''.join(NUMBER.sub('#', expected).split()):
    return False
  return all(
      float(a) == pytest.approx(float(e), rel=1e-3, abs=1e-3)
      for a, e in zip(NUMBER.findall(actual), NUMBER.findall(expected))
  )


def test_readme_examples_print_what_the_readme_shows():
  examples = _examples()
  assert len(examples) >= 4
  program = '\n'.join(f'print({MARKER.format(i)!r})\n{code}' for i, (code, _) in enumerate(examples))
  environment = {name: value for name, value in os.environ.items() if name != 'TF_CPP_MIN_LOG_LEVEL'}
  done = subprocess.run(
      [sys.executable, '-c', program], capture_output=True, text=True, timeout=300, env=environment
  )
  assert done.returncode == 0, done.stderr[-3000:]
  # Run verbatim, the snippets print to stderr only our warnings (each: location line, source line).
  stray = [line for line in done.stderr.splitlines() if not line.startswith(' ') and 'UserWarning: ' not in line]
  assert not stray, stray[:5]
  outputs = re.split(r'@@block-\d+@@\n', done.stdout)[1:]
  assert len(outputs) == len(examples)
  for (code, expected), actual in zip(examples, outputs):
    if expected is not None:
      assert _same_up_to_numbers(actual, expected), f'README block\n{code}\nprinted\n{actual}\nnot\n{expected}'
