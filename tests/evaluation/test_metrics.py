import numpy as np
import pytest

from tff_orchestra import evaluation as ev

NUM_CLASSES = 5
DIM = 16


def _blobs(per_class, seed):
  """Gaussian blobs around well-separated class means (the same for any seed)."""
  means = np.random.default_rng(1234).normal(size=(NUM_CLASSES, DIM)) * 5.0
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  noise = np.random.default_rng(seed).normal(size=(labels.size, DIM))
  return (means[labels] + noise).astype(np.float32), labels, means


@pytest.fixture(scope='module')
def blobs():
  train_x, train_y, means = _blobs(60, seed=1)
  test_x, test_y, _ = _blobs(60, seed=2)
  return train_x, train_y, test_x, test_y, means


@pytest.fixture(scope='module')
def noise():
  """Features independent of 4 balanced random classes: every score is chance."""
  rng = np.random.default_rng(7)
  features = rng.normal(size=(3000, 10))
  labels = rng.permutation(np.repeat(np.arange(4), 750))
  return features[:1000], labels[:1000], features[1000:], labels[1000:]


def test_separable_blobs_are_classified_almost_perfectly(blobs):
  train_x, train_y, test_x, test_y, _ = blobs
  assert ev.linear_probe(train_x, train_y, test_x, test_y) >= 0.99
  assert ev.knn_accuracy(train_x, train_y, test_x, test_y, k=20) >= 0.99
  assert ev.few_label_probe(train_x, train_y, test_x, test_y, labels_per_class=5) >= 0.95


def test_noise_features_score_chance(noise):
  train_x, train_y, test_x, test_y = noise
  chance = 0.25
  assert ev.linear_probe(train_x, train_y, test_x, test_y) == pytest.approx(chance, abs=0.05)
  assert ev.few_label_probe(train_x, train_y, test_x, test_y) == pytest.approx(chance, abs=0.05)
  assert ev.knn_accuracy(train_x, train_y, test_x, test_y) == pytest.approx(chance, abs=0.05)


def test_labelled_subset_takes_exactly_labels_per_class_from_every_class():
  labels = np.array([0] * 7 + [1] * 3 + [5] * 12)
  subset = ev.labelled_subset(labels, 3, seed=0)
  np.testing.assert_array_equal(np.unique(labels[subset], return_counts=True)[1], [3, 3, 3])
  assert np.unique(subset).size == subset.size
  np.testing.assert_array_equal(subset, ev.labelled_subset(labels, 3, seed=0))
  assert not np.array_equal(subset, ev.labelled_subset(labels, 3, seed=1))


def test_few_label_probe_needs_labels_per_class_in_every_class(blobs):
  train_x, train_y, test_x, test_y, _ = blobs
  keep = np.flatnonzero((train_y != 2) | (np.arange(train_y.size) % 60 < 4))
  train_x, train_y = train_x[keep], train_y[keep]  # class 2 keeps 4 examples
  assert ev.few_label_probe(train_x, train_y, test_x, test_y, labels_per_class=4) >= 0.9
  with pytest.raises(ValueError, match='class 2 has only 4 examples'):
    ev.few_label_probe(train_x, train_y, test_x, test_y, labels_per_class=5)


def test_few_label_probe_is_deterministic_for_a_seed(noise):
  train_x, train_y, test_x, test_y = noise
  first = ev.few_label_probe(train_x, train_y, test_x, test_y, seed=3)
  assert ev.few_label_probe(train_x, train_y, test_x, test_y, seed=3) == first


def test_knn_vote_tie_goes_to_the_more_similar_class():
  train = np.array([[1.0, 0.0], [1.0, 0.3], [0.0, 1.0]])
  test = np.array([[1.0, 0.1]])  # nearest [1, 0], then [1, 0.3]: one vote each
  assert ev.knn_accuracy(train, np.array([0, 1, 2]), test, np.array([0]), k=2) == 1.0
  assert ev.knn_accuracy(train, np.array([1, 0, 2]), test, np.array([1]), k=2) == 1.0


def test_knn_majority_beats_the_single_nearest():
  train = np.array([[1.0, 0.0], [1.0, 0.5], [1.0, 0.6]])
  test = np.array([[1.0, 0.05]])
  assert ev.knn_accuracy(train, np.array([0, 1, 1]), test, np.array([1]), k=3) == 1.0
  assert ev.knn_accuracy(train, np.array([0, 1, 1]), test, np.array([0]), k=1) == 1.0


def test_knn_uses_cosine_similarity(blobs):
  train_x, train_y, test_x, test_y, _ = blobs
  scales = np.random.default_rng(0).uniform(0.01, 100.0, size=(test_x.shape[0], 1))
  assert ev.knn_accuracy(train_x, train_y, test_x * scales, test_y, k=5) == ev.knn_accuracy(
      train_x, train_y, test_x, test_y, k=5
  )


def test_centroids_at_the_class_means_recover_the_classes(blobs):
  _, _, test_x, test_y, means = blobs
  order = np.array([3, 0, 4, 1, 2])  # cluster ids need not match class ids
  scores = ev.cluster_assignment_scores(test_x, means[order], test_y)
  assert scores == {'nmi': pytest.approx(1.0), 'ari': pytest.approx(1.0), 'clusters_used': NUM_CLASSES}


def test_random_centroid_assignments_carry_no_information(noise):
  _, _, test_x, test_y = noise
  centroids = np.random.default_rng(3).normal(size=(4, test_x.shape[1]))
  scores = ev.cluster_assignment_scores(test_x, centroids, test_y)
  assert scores['nmi'] == pytest.approx(0.0, abs=0.02)
  assert scores['ari'] == pytest.approx(0.0, abs=0.02)


def test_clusters_used_counts_only_assigned_centroids():
  projections = np.array([[2.0, 0.1], [3.0, -0.1], [0.1, 1.0]])
  centroids = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
  scores = ev.cluster_assignment_scores(projections, centroids, np.array([0, 0, 1]))
  assert scores['clusters_used'] == 2
  assert scores['nmi'] == pytest.approx(1.0)


def test_kmeans_recovers_separated_blobs(blobs):
  _, _, test_x, test_y, _ = blobs
  scores = ev.kmeans_cluster_scores(test_x, test_y, NUM_CLASSES)
  assert scores['nmi'] == pytest.approx(1.0)
  assert scores['ari'] == pytest.approx(1.0)
  assert scores['clusters_used'] == NUM_CLASSES


def test_kmeans_on_noise_is_near_zero(noise):
  _, _, test_x, test_y = noise
  scores = ev.kmeans_cluster_scores(test_x, test_y, 4, seed=1)
  assert scores['nmi'] == pytest.approx(0.0, abs=0.02)
  assert scores['ari'] == pytest.approx(0.0, abs=0.02)


def _probe_args():
  x = np.random.default_rng(0).normal(size=(8, 3))
  y = np.array([0, 1] * 4)
  return x, y, x.copy(), y.copy()


@pytest.mark.parametrize(
    'index, value, error, match',
    [
        (0, np.ones((8, 3), np.int64), TypeError, 'train_features must be an array of floats'),
        (0, np.ones(8), ValueError, r'train_features must be 2-D'),
        (0, np.full((8, 3), np.nan), ValueError, 'train_features must be finite'),
        (2, np.full((8, 3), np.inf), ValueError, 'test_features must be finite'),
        (2, np.ones((8, 4)), ValueError, r'test_features must have as many columns as train_features \(3\)'),
        (2, np.ones((0, 3)), ValueError, 'test_features must be 2-D'),
        (1, np.array([0.0, 1.0] * 4), TypeError, 'train_labels must be an array of ints'),
        (1, np.array([0, 1] * 3), ValueError, r'train_labels must be 1-D with one label per row of train_features \(8\)'),
        (3, np.zeros((8, 1), np.int64), ValueError, 'test_labels must be 1-D'),
        (1, np.zeros(8, np.int64), ValueError, 'at least 2 classes'),
    ],
)
def test_probe_inputs_are_checked(index, value, error, match):
  args = list(_probe_args())
  args[index] = value
  with pytest.raises(error, match=match):
    ev.linear_probe(*args)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        ({'k': 0}, ValueError, 'k must be >= 1'),
        ({'k': 9}, ValueError, r'k must be <= the number of train examples \(8\)'),
        ({'k': True}, TypeError, 'k must be an int'),
        ({'k': 2.0}, TypeError, 'k must be an int'),
    ],
)
def test_knn_arguments_are_checked(kwargs, error, match):
  with pytest.raises(error, match=match):
    ev.knn_accuracy(*_probe_args(), **kwargs)


def test_other_arguments_are_checked():
  x, y, _, _ = _probe_args()
  with pytest.raises(ValueError, match='labels_per_class must be >= 1'):
    ev.few_label_probe(*_probe_args(), labels_per_class=0)
  with pytest.raises(ValueError, match='seed must be >= 0'):
    ev.linear_probe(*_probe_args(), seed=-1)
  with pytest.raises(ValueError, match=r'num_clusters must be <= the number of examples \(8\)'):
    ev.kmeans_cluster_scores(x, y, 9)
  with pytest.raises(ValueError, match='features must be finite'):
    ev.kmeans_cluster_scores(np.full_like(x, np.nan), y, 2)
  with pytest.raises(ValueError, match=r'centroids must have as many columns as test_features_projected \(3\)'):
    ev.cluster_assignment_scores(x, np.ones((2, 4)), y)
  with pytest.raises(ValueError, match='test_labels must be 1-D with one label per row of test_features_projected'):
    ev.cluster_assignment_scores(x, np.ones((2, 3)), y[:5])


def test_alignment_and_uniformity_are_wang_and_isolas():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(40, 5))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  w = z + 0.1 * rng.normal(size=z.shape)
  w /= np.linalg.norm(w, axis=1, keepdims=True)
  assert ev.metrics.alignment(z, w) == pytest.approx(np.mean(np.sum((z - w) ** 2, axis=1)))
  assert ev.metrics.alignment(z, z) == pytest.approx(0.0)
  pairs = [np.exp(-2 * np.sum((z[i] - z[j]) ** 2)) for i in range(40) for j in range(i + 1, 40)]
  assert ev.metrics.uniformity(z) == pytest.approx(np.log(np.mean(pairs)))
  collapsed = np.tile(z[:1], (40, 1))
  assert ev.metrics.uniformity(collapsed) == pytest.approx(0.0) and ev.metrics.uniformity(z) < -1.0
  with pytest.raises(ValueError, match='L2-normalised'):
    ev.metrics.uniformity(2 * z)
  with pytest.raises(ValueError, match='shape of first_views'):
    ev.metrics.alignment(z, z[:3])
