import csv
import json

import numpy as np
import pytest

from tff_orchestra import evaluation as ev


@pytest.fixture(scope='module')
def split():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(3, 8)) * 5.0
  labels = np.repeat(np.arange(3), 30)
  train_x = means[labels] + rng.normal(size=(labels.size, 8))
  test_x = means[labels] + rng.normal(size=(labels.size, 8))
  return train_x, labels, test_x, labels.copy(), means


def _row(method, linear, few, knn, nmi, ari, centroid_nmi=None, centroid_ari=None, centroid_clusters_used=None,
         alignment=None, uniformity=None):
  return {
      'method': method, 'linear_probe': linear, 'few_label_probe': few, 'knn': knn,
      'nmi': nmi, 'ari': ari, 'kmeans_clusters': 10, 'centroid_nmi': centroid_nmi,
      'centroid_ari': centroid_ari, 'centroid_clusters_used': centroid_clusters_used,
      'alignment': alignment, 'uniformity': uniformity,
  }


ROWS = [
    _row('orchestra', 0.875, 0.6123, 0.8049, 0.4567, 0.1234, 0.5, 0.25, 17, 0.4321, -2.5),
    _row('raw pixels', 0.4, 0.25, 0.331, 0.05, 0.0104),
]


def test_row_without_centroids_uses_kmeans_over_the_test_classes(split):
  train_x, train_y, test_x, test_y, _ = split
  row = ev.evaluate_features('blobs', train_x, train_y, test_x, test_y, labels_per_class=5, knn_k=5)
  assert list(row) == [
      'method', 'linear_probe', 'few_label_probe', 'knn', 'nmi', 'ari', 'kmeans_clusters',
      'centroid_nmi', 'centroid_ari', 'centroid_clusters_used', 'alignment', 'uniformity',
  ]
  assert row['method'] == 'blobs'
  assert row['kmeans_clusters'] == 3
  assert row['centroid_nmi'] is None and row['centroid_clusters_used'] is None
  assert min(row['linear_probe'], row['few_label_probe'], row['knn'], row['nmi'], row['ari']) >= 0.95
  row = ev.evaluate_features('blobs', train_x, train_y, test_x, test_y, labels_per_class=5, num_clusters=6)
  assert row['kmeans_clusters'] == 6


def test_row_with_centroids_assigns_the_projections(split):
  train_x, train_y, test_x, test_y, means = split
  projections = test_x[:, :5] - means[test_y, :5] + 10.0 * np.eye(5)[test_y]
  row = ev.evaluate_features(
      'orchestra', train_x, train_y, test_x, test_y, labels_per_class=5,
      centroids=np.eye(5), test_projections=projections,
  )
  assert row['centroid_clusters_used'] == 3
  assert row['centroid_nmi'] == pytest.approx(1.0)
  assert row['centroid_ari'] == pytest.approx(1.0)
  assert row['nmi'] == pytest.approx(1.0)  # k-means on the features, as for every method


def test_view_projections_give_alignment_and_uniformity(split):
  train_x, train_y, test_x, test_y, _ = split
  rng = np.random.default_rng(3)
  first = rng.normal(size=(50, 4))
  first /= np.linalg.norm(first, axis=1, keepdims=True)
  row = ev.evaluate_features('m', train_x, train_y, test_x, test_y, labels_per_class=5, view_projections=(first, first))
  assert row['alignment'] == pytest.approx(0.0) and row['uniformity'] < 0


def test_evaluate_features_arguments_are_checked(split):
  train_x, train_y, test_x, test_y, means = split
  args = (train_x, train_y, test_x, test_y)
  with pytest.raises(ValueError, match='given together.*got only centroids'):
    ev.evaluate_features('m', *args, centroids=means)
  with pytest.raises(ValueError, match='got only test_projections'):
    ev.evaluate_features('m', *args, test_projections=test_x)
  with pytest.raises(TypeError, match='name must be a non-empty str'):
    ev.evaluate_features('', *args)


def test_table_shows_percentages_and_three_decimals():
  table = ev.format_table(ROWS)
  lines = table.splitlines()
  assert len(lines) == 4
  assert lines[0].split()[:2] == ['Method', 'Linear']
  assert set(lines[1]) <= {'-', ' '}
  assert lines[2].split() == ['orchestra', '87.5', '61.2', '80.5', '0.457', '0.123', '0.432', '-2.500', '0.500', '/',
                              '0.250', '(17', 'clusters)']
  assert lines[3].split() == ['raw', 'pixels', '40.0', '25.0', '33.1', '0.050', '0.010', '-', '-', '-']
  assert 'NMI (k-means, k=10)' in lines[0]
  for column in ('Linear probe', 'Few-label probe', 'kNN', 'NMI (k-means, k=10)', 'ARI (k-means, k=10)'):
    end = lines[0].index(column) + len(column)  # numbers right-aligned under the header
    assert lines[2][end - 1] != ' ' and lines[3][end - 1] != ' '


def test_table_rows_are_checked():
  with pytest.raises(TypeError, match='rows must be a non-empty list'):
    ev.format_table([])
  with pytest.raises(ValueError, match=r"rows\[1\] is missing \['knn'\]"):
    ev.format_table([ROWS[0], {k: v for k, v in ROWS[1].items() if k != 'knn'}])
  with pytest.raises(TypeError, match=r"rows\[0\]\['nmi'\] must be a number"):
    ev.format_table([dict(ROWS[0], nmi='high')])


def test_write_table_writes_json_and_csv(tmp_path):
  rows = [dict(ROWS[0], knn=np.float32(0.5)), ROWS[1]]
  json_path, csv_path = ev.write_table(rows, tmp_path / 'results' / 'table')
  assert json_path == tmp_path / 'results' / 'table.json'
  assert csv_path == tmp_path / 'results' / 'table.csv'
  loaded = json.loads(json_path.read_text())
  assert loaded == [dict(ROWS[0], knn=0.5), ROWS[1]]
  with csv_path.open(newline='') as f:
    read = list(csv.DictReader(f))
  assert [r['method'] for r in read] == ['orchestra', 'raw pixels']
  assert list(read[0]) == list(ROWS[0])
  assert float(read[0]['linear_probe']) == 0.875
  assert int(read[0]['centroid_clusters_used']) == 17
  assert read[1]['centroid_nmi'] == ''


def test_write_table_rejects_a_suffix(tmp_path):
  with pytest.raises(ValueError, match='must not end in .json or .csv'):
    ev.write_table(ROWS, tmp_path / 'table.json')


def test_pixel_features_flattens_to_float32():
  images = np.arange(2 * 4 * 3 * 2, dtype=np.uint8).reshape(2, 4, 3, 2)
  features = ev.pixel_features(images)
  assert features.dtype == np.float32
  assert features.shape == (2, 24)
  np.testing.assert_array_equal(features[1], images[1].ravel())
  assert ev.pixel_features(np.zeros((3, 5, 5))).shape == (3, 25)
  with pytest.raises(ValueError, match='images must have a leading example axis'):
    ev.pixel_features(np.zeros(5))
  with pytest.raises(TypeError, match='images must be an array of numbers'):
    ev.pixel_features(np.array([['a']]))
