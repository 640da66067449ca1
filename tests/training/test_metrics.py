"""Metrics rows: flattened names, metrics.json/.csv, the progress bar's text."""

import collections
import csv
import json

import numpy as np
import tensorflow as tf

from tff_orchestra.training import metrics


def test_metrics_csv_keeps_list_values_in_one_cell(tmp_path):
  rows = [{'round': 0, 'aggregator/prototype_mass': [0.25, 0.75], 'loss': 1.5}]
  metrics.write_metrics(str(tmp_path), rows)
  with open(tmp_path / 'metrics.csv', newline='') as file:
    read = list(csv.DictReader(file))
  assert read == [{'round': '0', 'aggregator/prototype_mass': '[0.25, 0.75]', 'loss': '1.5'}]


def test_nested_metrics_flatten_to_slash_names():
  nested = collections.OrderedDict(
      client_work=collections.OrderedDict(train=collections.OrderedDict(loss=np.float32(0.5), examples=np.int64(3))),
      aggregator=collections.OrderedDict(prototype_mass=np.array([0.25, 0.75]), statistics=()),
  )
  assert metrics.flatten_metrics(nested) == {
      'client_work/train/loss': 0.5, 'client_work/train/examples': 3, 'aggregator/prototype_mass': [0.25, 0.75],
  }


def test_progress_postfix_shows_losses_clusters_and_epsilon():
  row = {'client_work/train/cluster_loss': 1.23456, 'client_work/train/degeneracy_loss': 0.5,
         'client_work/global_clustering/clusters_in_use': 7, 'aggregator/mean_value/epsilon': 12.5}
  assert metrics.progress_postfix(row) == {'cluster': '1.23', 'deg': '0.5', 'in use': '7', 'eps': '12.5'}


def test_write_json_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / 'x.json')
  metrics.write_json(path, {'a': 1})
  metrics.write_json(path, {'b': np.float32(2.5)})
  assert json.loads((tmp_path / 'x.json').read_text()) == {'b': 2.5}
  assert not (tmp_path / 'x.json.partial').exists()


def read_tensorboard_scalars(directory):
  """{tag: {step: value}} of the event files in `directory`."""
  scalars = {}
  for path in sorted(directory.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return scalars


def test_tensorboard_gets_every_number_of_a_row_at_its_round(tmp_path):
  writer = metrics.TensorBoardWriter(str(tmp_path))
  writer.write({'round': 0, 'seconds': 1.5, 'aggregator/epsilon': 2.0, 'aggregator/prototype_mass': [0.5, 0.5]})
  writer.write({'round': 1, 'seconds': 1.25, 'aggregator/epsilon': 3.0, 'aggregator/budget_exhausted': True})
  writer.close()
  assert read_tensorboard_scalars(tmp_path / 'tensorboard') == {
      'seconds': {0: 1.5, 1: 1.25}, 'aggregator/epsilon': {0: 2.0, 1: 3.0},
  }
