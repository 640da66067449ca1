"""Worker addresses (`host:port`), checked without TensorFlow: the command line parses `--workers` with it."""

from __future__ import annotations

from typing import Sequence, Union


def parse_worker_addresses(workers: Union[str, Sequence[str]]) -> list[str]:
  """`'host:port,host:port'` or a list of `'host:port'` -> the list, checked."""
  items = workers.split(',') if isinstance(workers, str) else list(workers)
  addresses = []
  for item in items:
    host, _, port = str(item).strip().rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"workers: expected 'host:port' addresses (port 1-65535), got {item!r}")
    addresses.append(f'{host}:{int(port)}')
  if not addresses:
    raise ValueError('workers: expected at least one host:port address')
  if len(set(addresses)) != len(addresses):
    raise ValueError(f'workers: each worker once, got {addresses}')
  return addresses
