"""Checkpoints: atomic, the last two kept, a corrupt or foreign one named and skipped."""

import os

import numpy as np
import pytest

from tff_orchestra import training
from tff_orchestra.training import checkpoints

STATE = {'weights': [np.arange(3, dtype=np.float32), np.ones((2, 2), np.float32)], 'round': np.int64(4)}


def test_saves_keep_the_last_two_and_load_back(tmp_path):
  for round_num in range(4):
    checkpoints.save_checkpoint(str(tmp_path), round_num, STATE)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['round_00002.npz', 'round_00003.npz']
  round_num, path = checkpoints.latest_checkpoint(str(tmp_path))
  assert round_num == 3
  loaded = checkpoints.load_checkpoint(path, STATE)
  np.testing.assert_array_equal(loaded['weights'][1], STATE['weights'][1])
  assert loaded['round'] == 4


def test_a_checkpoint_of_another_state_is_refused(tmp_path):
  checkpoints.save_checkpoint(str(tmp_path), 0, STATE)
  _, path = checkpoints.latest_checkpoint(str(tmp_path))
  other = {'weights': [np.zeros(4, np.float32), np.ones((2, 2), np.float32)], 'round': np.int64(0)}
  with pytest.raises(checkpoints.CorruptCheckpointError, match='does not hold a state of this run'):
    checkpoints.load_checkpoint(path, other)


def test_restore_skips_a_corrupt_checkpoint_and_names_it(tmp_path, capsys):
  checkpoints.save_checkpoint(str(tmp_path), 1, STATE)
  checkpoints.save_checkpoint(str(tmp_path), 2, STATE)
  (tmp_path / 'checkpoints' / 'round_00002.npz').write_bytes(b'not a zip file')
  round_num, _ = checkpoints.restore_checkpoint(str(tmp_path), STATE, newest_round=5)
  assert round_num == 1 and 'round_00002.npz is unreadable' in capsys.readouterr().err
  (tmp_path / 'checkpoints' / 'round_00001.npz').write_bytes(b'')
  with pytest.raises(training.ConfigError, match='no readable checkpoint'):
    checkpoints.restore_checkpoint(str(tmp_path), STATE, newest_round=5)


def test_no_checkpoint_is_none(tmp_path):
  assert checkpoints.latest_checkpoint(str(tmp_path)) is None
