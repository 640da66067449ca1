"""The package could be published: a wheel and an sdist build (`python -m build`, in its
isolated build environment, as a release would be), pass `twine check --strict`, and the
wheel installs into a fresh virtual environment beside TFF 0.87, where the CLI answers.

The fresh environment sees this environment's packages (TFF 0.87 and its pins, installed
as `make install` installs them) through a .pth file placed after its own site-packages,
so the wheel is installed without downloads and imported from the new environment.
"""

import email.parser
import pathlib
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def distributions(tmp_path_factory):
  out = tmp_path_factory.mktemp('dist')
  done = subprocess.run(
      [sys.executable, '-m', 'build', '--outdir', str(out), str(ROOT)],  # isolated, as a release is built
      capture_output=True, text=True, timeout=600,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  [wheel] = out.glob('*.whl')
  [sdist] = out.glob('*.tar.gz')
  return wheel, sdist


def test_wheel_and_sdist_pass_twine_check(distributions):
  done = subprocess.run([sys.executable, '-m', 'twine', 'check', '--strict', *map(str, distributions)],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr


def test_the_wheel_carries_the_package_its_licence_and_entry_point(distributions):
  wheel, _ = distributions
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    [metadata_name] = [name for name in names if name.endswith('.dist-info/METADATA')]
    metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    [entry_points] = [name for name in names if name.endswith('.dist-info/entry_points.txt')]
    assert 'tff-orchestra = tff_orchestra.cli:main' in archive.read(entry_points).decode()
  assert 'tff_orchestra/aggregators/gaussian_noise.py' in names
  assert not any(name.startswith(('tests/', 'benchmarks/', 'docs/')) for name in names)
  assert any(name.endswith('.dist-info/licenses/LICENSE') for name in names)
  assert metadata['License-Expression'] == 'Apache-2.0'
  assert metadata['Description-Content-Type'] == 'text/markdown'


def test_the_wheel_installs_beside_tff_and_the_cli_answers(distributions, tmp_path):
  wheel, _ = distributions
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
  python = venv / 'bin' / 'python'
  own_site = pathlib.Path(subprocess.run(
      [str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
      capture_output=True, text=True, check=True).stdout.strip())
  (own_site / 'beside_tff.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
  done = subprocess.run(
      [sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-index', '--no-deps', '--quiet', str(wheel)],
      capture_output=True, text=True, timeout=300,
  )
  assert done.returncode == 0, done.stdout + done.stderr
  # Every requirement the wheel declares is met beside TFF 0.87.
  check = subprocess.run([str(python), '-c', (
      'from importlib import metadata; from packaging.requirements import Requirement\n'
      'for text in metadata.requires("tff_orchestra"):\n'
      '  requirement = Requirement(text)\n'
      '  if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):\n'
      '    version = metadata.version(requirement.name)\n'
      '    assert requirement.specifier.contains(version, prereleases=True), (text, version)\n'
      'import tff_orchestra; print(tff_orchestra.__file__)'
  )], capture_output=True, text=True, timeout=120, cwd=tmp_path)  # not the repository: '' leads sys.path
  assert check.returncode == 0, check.stderr[-2000:]
  assert check.stdout.strip().startswith(str(own_site)), check.stdout
  version = subprocess.run([str(venv / 'bin' / 'tff-orchestra'), '--version'], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
  assert version.returncode == 0, version.stderr
  assert version.stdout.strip() == 'tff-orchestra 0.1.0 (TensorFlow Federated 0.87.0)'
