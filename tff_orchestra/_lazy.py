"""A package's public names, imported on first use (PEP 562).

`tff_orchestra.orchestra`, `.runtime` and `.training` export names from
modules that import TensorFlow; the command line reads only their light
modules (`orchestra/config.py`, `runtime/addresses.py`, `training/config.py`)
to build its flags, so `tff-orchestra --help` and a bad flag answer without
loading TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
  """`(__getattr__, __dir__)` for `package`, whose `names` map each public name to the module defining it."""

  def __getattr__(name: str) -> object:  # pylint: disable=invalid-name
    if name not in names:
      raise AttributeError(f'module {package!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{package}.{names[name]}'), name)

  def __dir__() -> list[str]:  # pylint: disable=invalid-name
    return sorted(names)

  return __getattr__, __dir__
