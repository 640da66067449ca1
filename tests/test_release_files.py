"""The files a published package carries agree with pyproject.toml: licence, changelog, citation."""

import pathlib
import re
import sys

if sys.version_info >= (3, 11):
  import tomllib
else:
  import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']


def test_license_file_is_the_license_pyproject_declares():
  assert PROJECT['license'] == 'Apache-2.0'
  text = (ROOT / 'LICENSE').read_text()
  assert 'Apache License' in text and 'Version 2.0, January 2004' in text
  assert 'END OF TERMS AND CONDITIONS' in text


def test_changelog_has_an_entry_for_this_version():
  text = (ROOT / 'CHANGELOG.md').read_text()
  assert 'Keep a Changelog' in text and 'Semantic Versioning' in text
  version = re.escape(PROJECT['version'])
  assert re.search(rf'^## \[{version}\]|^Version {version}, not yet published', text, re.MULTILINE)


def test_citation_names_this_version_and_license():
  fields = dict(re.findall(r'^([a-z-]+): *"?([^"\n]*)"?$', (ROOT / 'CITATION.cff').read_text(), re.MULTILINE))
  assert fields['cff-version'] == '1.2.0'
  assert fields['version'] == PROJECT['version'] and fields['license'] == PROJECT['license']
