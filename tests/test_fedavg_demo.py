"""`tff-orchestra fedavg-demo`: TFF's federated averaging with the three factories chained."""

import numpy as np

from tff_orchestra import fedavg_demo


def test_fedavg_demo_learns_with_all_three_factories(capsys):
  history = fedavg_demo.run(rounds=4, num_clients=4, seed=1)
  assert [row['round'] for row in history] == [1, 2, 3, 4]
  assert all(np.isfinite(row['loss']) and np.isfinite(row['epsilon']) for row in history)
  assert history[-1]['loss'] < history[0]['loss']
  assert history[0]['quality_mean'] == 1.0  # prototypes not learned yet
  assert 'round  4  loss' in capsys.readouterr().out


def test_label_skewed_digits_give_each_client_few_classes():
  datasets = fedavg_demo.label_skewed_digits(num_clients=10, seed=0)
  assert len(datasets) == 10
  for dataset in datasets:
    labels = np.concatenate([batch['y'].numpy() for batch in dataset])
    assert len(labels) in (179, 180) and len(np.unique(labels)) <= 3
