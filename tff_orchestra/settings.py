"""Settings declared once, as dataclass fields; their checks, flags and TOML form follow from them.

A configuration is a tree of frozen dataclasses (sections) whose fields are
declared with `setting(default, help=..., check=...)`. From that one declaration:

* `check_fields(section)` (called by a section's `__post_init__`) checks each
  value's type and its `check`, and turns ints into floats where a float is
  declared, so a section cannot hold a bad value;
* `add_arguments(parser, tree)` makes one command-line flag per field: its name
  (`num_clients` -> `--num-clients`, plus any `aliases`), its type, default and
  help; `given_arguments(args)` returns only the flags the user gave;
* `from_mapping(tree, mapping)` and `to_mapping(config)` read and write the
  nested form that `load_toml` / `dump_toml` keep in a TOML file.

A field declared `derived='run.seed'` is copied from that field of the tree
and has no flag or TOML key of its own (the Orchestra seed is the run's seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import functools
import math
import operator
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any, Optional

import tomli_w

if sys.version_info >= (3, 11):
  import tomllib
else:  # Python 3.9 and 3.10 have no tomllib: its backport, the same parser.
  import tomli as tomllib

# A check returns what is wrong with a value ('must be ...'), or None.
Check = Callable[[Any], Optional[str]]


class ConfigError(ValueError):
  """A bad configuration or output directory: reported as one line by the CLI."""


class InvalidSetting(ConfigError):
  """A value a setting cannot take; `path` names it (`'data.alpha'`, or `'DataConfig.alpha'`)."""

  def __init__(self, path: str, problem: str, value: Any):
    super().__init__(f'{path} {problem}, got {value!r}')
    self.path, self.problem, self.value = path, problem, value

  def at(self, path: str) -> 'InvalidSetting':
    """The same error named by another path (its place in a tree, or its flag)."""
    return InvalidSetting(path, self.problem, self.value)


def integer(minimum: int) -> Check:
  def check(value):
    return None if value >= minimum else f'must be an int >= {minimum}'
  return check


def number(*, minimum: Optional[float] = None, above: Optional[float] = None,
           below: Optional[float] = None, maximum: Optional[float] = None) -> Check:
  """Bounds on a float: `minimum <= value`, `above < value`, `value < below`, `value <= maximum`."""
  bounds = [(sign, bound) for sign, bound in (('>=', minimum), ('>', above), ('<', below), ('<=', maximum))
            if bound is not None]
  wanted = 'must be a number ' + ' and '.join(f'{sign} {bound}' for sign, bound in bounds)

  def check(value):  # NaN fails every comparison, so it is refused too.
    if not all(_COMPARE[sign](value, bound) for sign, bound in bounds):
      return wanted
    return None if math.isfinite(value) else 'must be finite'
  return check


_COMPARE = {'>=': operator.ge, '>': operator.gt, '<': operator.lt, '<=': operator.le}


def one_of(*choices: str) -> Check:
  def check(value):
    return None if value in choices else f'must be one of {", ".join(choices)}'
  return check


def non_empty(value: str) -> Optional[str]:
  return None if value.strip() else 'must not be empty'


def setting(default: Any = dataclasses.MISSING, *, help: str, check: Optional[Check] = None,  # pylint: disable=redefined-builtin
            aliases: tuple[str, ...] = (), flag: Optional[str] = None,
            parse: Optional[Callable[[str], Any]] = None, derived: Optional[str] = None) -> Any:
  """A dataclass field with what its flag and checks need.

  Args:
    default: The default; a list or tuple default is stored as a tuple.
    help: One line for `--help` and the documentation.
    check: What the value must satisfy, beyond its annotated type.
    aliases: Further flags, e.g. a shorter name.
    flag: The flag's name when it is not the field's (`aggregators` -> `--aggregator`).
    parse: For a flag whose text is not one value of the type (`'h:1,h:2'` -> a tuple).
    derived: `'section.field'` of the tree this field copies; it has no flag.
  """
  metadata = dict(help=help, check=check, aliases=aliases, flag=flag, parse=parse, derived=derived)
  return dataclasses.field(default=default, metadata=metadata)


def _expected_type(annotation) -> tuple[Any, bool]:
  """(the element or value type, whether None is allowed) of a supported annotation."""
  optional = False
  if typing.get_origin(annotation) is typing.Union:
    (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    optional = True
  return annotation, optional


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _coerced(annotation, value: Any) -> tuple[Any, Optional[str]]:
  """`value` as the annotation's type (ints to float, lists to tuples), or what it should be."""
  wanted, optional = _expected_type(annotation)
  if value is None:
    return value, None if optional else f'must be {_A.get(wanted, "a list of strings")}'
  if typing.get_origin(wanted) is tuple:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
      return value, 'must be a list of strings'
    return tuple(value), None
  if wanted is bool:
    return value, None if isinstance(value, bool) else f'must be {_A[bool]}'
  if isinstance(value, bool):
    return value, f'must be {_A[wanted]}, not true or false'
  if wanted is float and isinstance(value, int):
    return float(value), None
  return value, None if isinstance(value, wanted) else f'must be {_A[wanted]}'


_A = {int: 'an int', float: 'a number', str: 'a string', bool: 'true or false'}


def check_fields(section: Any) -> None:
  """Checks (and coerces) every field of a frozen dataclass; raises `InvalidSetting`."""
  owner = type(section).__name__
  for field in dataclasses.fields(section):
    value, problem = _coerced(_hints(type(section))[field.name], getattr(section, field.name))
    if problem is None and value is not None and field.metadata.get('check'):
      problem = field.metadata['check'](value)
    if problem:
      raise InvalidSetting(f'{owner}.{field.name}', problem, value)
    object.__setattr__(section, field.name, value)


def sections(tree: type) -> dict[str, type]:
  """`{section name: its dataclass}` of a tree (a dataclass whose fields are dataclasses)."""
  hints = _hints(tree)
  return {field.name: hints[field.name] for field in dataclasses.fields(tree)}


def leaves(tree: type) -> dict[str, dataclasses.Field]:
  """`{'section.field': field}` for every field a flag or file may set (derived ones aside)."""
  return {
      f'{name}.{field.name}': field
      for name, section in sections(tree).items()
      for field in dataclasses.fields(section)
      if not field.metadata.get('derived')
  }


def flag_of(field: dataclasses.Field) -> str:
  return '--' + (field.metadata.get('flag') or field.name).replace('_', '-')


def named_as_flags(tree: type, text: str) -> str:
  """`text` with each setting it names (`'data.num_clients'` or `'DataConfig.num_clients'`) written as its flag."""
  flags = {}
  for name, section in sections(tree).items():
    for field in dataclasses.fields(section):
      if not field.metadata.get('derived'):
        flags[f'{name}.{field.name}'] = flags[f'{section.__name__}.{field.name}'] = flag_of(field)
  return re.sub(r'\b[A-Za-z_]+\.[a-z_]+\b', lambda match: flags.get(match.group(0), match.group(0)), text)


def add_arguments(parser: argparse.ArgumentParser, tree: type, *, exclude: tuple[str, ...] = (),
                  base: Any = None) -> None:
  """One flag per setting of `tree`, grouped by section; a flag not given is absent from the result.

  `exclude` names settings (`'run.output_dir'`) the caller sets itself;
  `base` is a config of `tree` whose values `--help` shows as the defaults
  (a benchmark's own, say), else the fields' defaults are shown.
  """
  for name, section in sections(tree).items():
    group = parser.add_argument_group(f'[{name}]', (section.__doc__ or '').split('\n')[0])
    for field in dataclasses.fields(section):
      path = f'{name}.{field.name}'
      if field.metadata.get('derived') or path in exclude:
        continue
      default = getattr(getattr(base, name), field.name) if base is not None else field.default
      if default is dataclasses.MISSING:
        shown = ' (required)'
      elif default in (None, (), ''):
        shown = ' (repeatable)' if default == () else ' (default: none)'
      else:
        shown = f' (default: {_shown(default)})'
      options = dict(dest=path, default=argparse.SUPPRESS, help=field.metadata['help'] + shown)
      wanted, _ = _expected_type(_hints(section)[field.name])
      if wanted is bool:
        options['action'] = argparse.BooleanOptionalAction
      elif field.metadata.get('parse'):
        options.update(type=_flag_parser(field.metadata['parse']), metavar=field.name.upper())
      elif typing.get_origin(wanted) is tuple:
        options.update(action='append', metavar=flag_of(field)[2:].replace('-', '_').upper())
      else:
        options.update(type=_flag_parser(wanted), metavar={int: 'N', float: 'X'}.get(wanted, field.name.upper()))
      group.add_argument(flag_of(field), *field.metadata['aliases'], **options)


def _shown(value: Any) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, tuple):
    return ','.join(value)
  return str(value)


def _flag_parser(convert: Callable[[str], Any]) -> Callable[[str], Any]:
  def parse(text: str):
    try:
      return convert(text)
    except ValueError as error:
      kind = {int: 'an integer', float: 'a number'}.get(convert)
      raise argparse.ArgumentTypeError(f'expected {kind}, got {text!r}' if kind else str(error)) from error
  parse.__name__ = getattr(convert, '__name__', 'value')
  return parse


def given_arguments(args: argparse.Namespace) -> dict[str, Any]:
  """`{'section.field': value}` for the settings the user gave as flags."""
  return {key: value for key, value in vars(args).items() if '.' in key}


def to_mapping(config: Any, *, skip_sections: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
  """The nested `{section: {field: value}}` form; derived fields and `None` values left out."""
  mapping = {}
  for name in sections(type(config)):
    if name in skip_sections:
      continue
    section = getattr(config, name)
    mapping[name] = {
        field.name: list(value) if isinstance(value, tuple) else value
        for field in dataclasses.fields(section)
        if not field.metadata.get('derived') and (value := getattr(section, field.name)) is not None
    }
  return mapping


def from_mapping(tree: type, mapping: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None):
  """Builds `tree` from `{section: {field: value}}`, then `{'section.field': value}` overrides.

  Unknown sections and keys are errors that name them; a bad value is an
  `InvalidSetting` whose path is `'section.field'`.
  """
  known = sections(tree)
  values: dict[str, dict[str, Any]] = {name: {} for name in known}
  for name, content in mapping.items():
    if name not in known:
      raise ConfigError(f'unknown section [{name}]; the sections are {", ".join(known)}')
    if not isinstance(content, Mapping):
      raise ConfigError(f'[{name}] must be a table of settings, got {content!r}')
    values[name].update(content)
  settable = leaves(tree)
  for path, value in (overrides or {}).items():
    values[path.split('.')[0]][path.split('.')[1]] = value
  for name, content in values.items():
    unknown = sorted(f'{name}.{key}' for key in content if f'{name}.{key}' not in settable)
    if unknown:
      keys = ', '.join(path.split('.')[1] for path in settable if path.startswith(name + '.'))
      raise ConfigError(f'unknown setting {", ".join(unknown)}; [{name}] has {keys}')
  built = {}
  for name, section in known.items():
    missing = [f'{name}.{field.name}' for field in dataclasses.fields(section)
               if field.default is dataclasses.MISSING and field.name not in values[name]]
    if missing:
      raise ConfigError(f'{missing[0]} is required')
    try:
      built[name] = section(**values[name])
    except InvalidSetting as error:
      raise error.at(f'{name}.{error.path.split(".")[-1]}') from None
  return tree(**built)


def replace(config: Any, overrides: Mapping[str, Any]):
  """`config` with `{'section.field': value}` overrides (checked as on construction)."""
  return from_mapping(type(config), to_mapping(config), overrides)


def differences(a: Any, b: Any, *, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
  """`[(path, a's value, b's value)]` for every setting (outside `ignore`) where two trees differ."""
  found = []
  for path in leaves(type(a)):
    if path in ignore or path.split('.')[0] in ignore:
      continue
    section, name = path.split('.')
    x, y = getattr(getattr(a, section), name), getattr(getattr(b, section), name)
    if x != y:
      found.append((path, x, y))
  return found


def load_toml(path: str) -> dict[str, Any]:
  with open(path, 'rb') as file:
    return tomllib.load(file)


TOMLDecodeError = tomllib.TOMLDecodeError


def dump_toml(mapping: Mapping[str, Any], header: str = '') -> str:
  """The TOML text of a nested mapping, after `header` (each line a comment)."""
  comment = ''.join(f'# {line}\n' if line else '#\n' for line in header.splitlines())
  return comment + ('\n' if comment else '') + tomli_w.dumps(mapping)
