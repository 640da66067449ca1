"""The README's and the documentation's examples run, and print what the pages say they print.

Each page's ```python blocks run, in order, in one fresh interpreter; the ```text block
right after a python block must match what that block printed, numbers to 1e-3
(stochastic rounding moves the last digits). Run this file as a script with a page's
path to see what each of its blocks prints.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md'] + sorted(
    path for path in (ROOT / 'docs').rglob('*.md') if not any(part.is_symlink() for part in path.parents)
)
BLOCK = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)
NUMBER = re.compile(r'-?\d+\.?\d*(?:e[-+]?\d+)?')
MARKER = '@@block-{}@@'


def blocks(page):
  """(language, body) of each fenced block of a page."""
  return BLOCK.findall(page.read_text())


def examples(page):
  """(code, expected output or None) for each python block of a page."""
  found = blocks(page)
  pairs = []
  for index, (kind, body) in enumerate(found):
    if kind == 'python':
      following = found[index + 1] if index + 1 < len(found) else ('', '')
      pairs.append((body, following[1] if following[0] == 'text' else None))
  return pairs


def run_examples(page):
  """Runs a page's python blocks in one interpreter: (process, each block's output)."""
  pairs = examples(page)
  program = '\n'.join(f'print({MARKER.format(i)!r})\n{code}' for i, (code, _) in enumerate(pairs))
  environment = {name: value for name, value in os.environ.items() if name != 'TF_CPP_MIN_LOG_LEVEL'}
  done = subprocess.run(
      [sys.executable, '-c', program], capture_output=True, text=True, timeout=600, env=environment, cwd=ROOT
  )
  return done, re.split(r'@@block-\d+@@\n', done.stdout)[1:]


def _same_up_to_numbers(actual, expected):
  # numpy pads numbers to equal width, so whitespace is not compared.
  if ''.join(NUMBER.sub('#', actual).split()) != ''.join(NUMBER.sub('#', expected).split()):
    return False
  return all(
      float(a) == pytest.approx(float(e), rel=1e-3, abs=1e-3)
      for a, e in zip(NUMBER.findall(actual), NUMBER.findall(expected))
  )


def test_every_code_block_is_python_text_or_shell():
  for page in PAGES:
    for kind, body in blocks(page):
      assert kind in ('python', 'text', 'bash', 'toml'), f'{page.name}: a ```{kind} block: {body[:80]!r}'


@pytest.mark.parametrize('page', [page for page in PAGES if examples(page)], ids=lambda page: str(page.relative_to(ROOT)))
def test_examples_print_what_the_page_shows(page):
  pairs = examples(page)
  done, outputs = run_examples(page)
  assert done.returncode == 0, done.stderr[-3000:]
  # Run verbatim, the examples print to stderr only our warnings (each: location line, source line).
  stray = [line for line in done.stderr.splitlines() if not line.startswith(' ') and 'UserWarning: ' not in line]
  assert not stray, stray[:5]
  # The page shows each warning its examples raise (its first clause, as printed).
  text = ' '.join(page.read_text().split())
  for line in done.stderr.splitlines():
    if 'UserWarning: ' in line:
      assert line.split('UserWarning: ', 1)[1].split(';')[0] in text, f'{page.name} does not show the warning {line}'
  assert len(outputs) == len(pairs)
  for (code, expected), actual in zip(pairs, outputs):
    if expected is not None:
      assert _same_up_to_numbers(actual, expected), f'{page.name}: block\n{code}\nprinted\n{actual}\nnot\n{expected}'


if __name__ == '__main__':
  finished, printed = run_examples(pathlib.Path(sys.argv[1]).resolve())
  for number, text in enumerate(printed):
    print(f'--- block {number}\n{text}', end='')
  print(finished.stderr[-3000:], file=sys.stderr)
