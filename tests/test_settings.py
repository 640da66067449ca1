"""`settings`: a field declared once gives its check, its flag and its TOML key."""

import argparse
import dataclasses
from typing import Optional

import pytest

from tff_orchestra import settings
from tff_orchestra.settings import integer, number, one_of, setting


@dataclasses.dataclass(frozen=True)
class Section:
  """A section of a user's tree."""

  size: int = setting(3, help='how many', check=integer(1), aliases=('--n',))
  rate: float = setting(0.5, help='how fast', check=number(above=0, maximum=1))
  mode: str = setting('a', help='which', check=one_of('a', 'b'))
  path: Optional[str] = setting(None, help='where')
  names: tuple[str, ...] = setting((), help='repeatable', flag='name')
  on: bool = setting(True, help='whether')
  copy: int = setting(0, help='copied from the other section', derived='other.seed')

  def __post_init__(self):
    settings.check_fields(self)


@dataclasses.dataclass(frozen=True)
class Other:
  """Another section."""

  seed: int = setting(0, help='a seed', check=integer(0))

  def __post_init__(self):
    settings.check_fields(self)


@dataclasses.dataclass(frozen=True)
class Tree:
  section: Section = dataclasses.field(default_factory=Section)
  other: Other = dataclasses.field(default_factory=Other)


@pytest.mark.parametrize(
    'values, message',
    [
        (dict(size=0), 'Section.size must be an int >= 1, got 0'),
        (dict(size=True), 'Section.size must be an int, not true or false, got True'),
        (dict(size='3'), "Section.size must be an int, got '3'"),
        (dict(rate=1.5), 'Section.rate must be a number > 0 and <= 1, got 1.5'),
        (dict(rate=float('nan')), 'Section.rate must be a number > 0 and <= 1, got nan'),
        (dict(rate=float('inf')), 'Section.rate must be a number > 0 and <= 1, got inf'),
        (dict(mode='c'), "Section.mode must be one of a, b, got 'c'"),
        (dict(names='x'), "Section.names must be a list of strings, got 'x'"),
        (dict(on=1), 'Section.on must be true or false, got 1'),
        (dict(size=None), 'Section.size must be an int, got None'),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(values, message):
  with pytest.raises(settings.InvalidSetting) as raised:
    Section(**values)
  assert str(raised.value) == message


def test_values_are_coerced_to_the_declared_type():
  section = Section(rate=1, names=['x', 'y'])
  assert section.rate == 1.0 and isinstance(section.rate, float) and section.names == ('x', 'y')


def test_a_new_field_is_a_flag_with_its_type_default_and_help():
  parser = argparse.ArgumentParser()
  settings.add_arguments(parser, Tree)
  text = parser.format_help()
  assert '--size N, --n N' in text and 'how many (default: 3)' in text and '--no-on' in text
  assert '--copy' not in text, 'a derived field has no flag'
  given = settings.given_arguments(parser.parse_args(['--n', '5', '--name', 'x', '--name', 'y', '--no-on']))
  assert given == {'section.size': 5, 'section.names': ['x', 'y'], 'section.on': False}
  with pytest.raises(SystemExit):
    parser.parse_args(['--size', 'many'])


def test_mapping_round_trip_and_errors(tmp_path):
  tree = settings.from_mapping(Tree, {'section': {'size': 4}}, {'other.seed': 2})
  assert tree.section.size == 4 and tree.other.seed == 2
  mapping = settings.to_mapping(tree)
  assert 'path' not in mapping['section'] and 'copy' not in mapping['section']  # None and derived left out
  (tmp_path / 'tree.toml').write_text(settings.dump_toml(mapping, header='a comment\n\nand another'))
  assert (tmp_path / 'tree.toml').read_text().startswith('# a comment\n#\n# and another\n\n[section]')
  assert settings.from_mapping(Tree, settings.load_toml(tmp_path / 'tree.toml')) == tree
  with pytest.raises(settings.InvalidSetting, match=r'^section\.size must be an int >= 1, got 0$'):
    settings.from_mapping(Tree, {'section': {'size': 0}})
  with pytest.raises(settings.ConfigError, match=r'unknown setting section\.sizes; \[section\] has size, rate'):
    settings.from_mapping(Tree, {'section': {'sizes': 4}})
  assert settings.differences(tree, settings.replace(tree, {'section.size': 5})) == [('section.size', 4, 5)]
  assert settings.differences(tree, settings.replace(tree, {'section.size': 5}), ignore=('section',)) == []
