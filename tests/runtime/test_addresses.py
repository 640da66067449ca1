"""`parse_worker_addresses`: `host:port` lists, checked, without TensorFlow."""

import pytest

from tff_orchestra.runtime import addresses


def test_worker_addresses_are_checked():
  assert addresses.parse_worker_addresses('a:1, b.example.org:65535') == ['a:1', 'b.example.org:65535']
  assert addresses.parse_worker_addresses(['[::1]:8000']) == ['[::1]:8000']
  for bad in ('a', 'a:', ':80', 'a:0', 'a:70000', 'a:x', 'a:1,a:1', ''):
    with pytest.raises(ValueError, match='workers'):
      addresses.parse_worker_addresses(bad)
