"""Scores for frozen features: linear and few-label probes, kNN, clustering.

All functions take numpy arrays (features `[N, D]` of a floating dtype, labels
`[N]` of an integer dtype), check them early with errors that name the
argument, and return plain Python numbers. No TensorFlow: the features are
computed once, then scored here.

* `linear_probe`: multinomial logistic regression on standardised features,
  trained on all train labels (the usual linear-evaluation protocol).
* `few_label_probe`: the same, trained on `labels_per_class` seeded examples
  per class (the semi-supervised protocol of the Orchestra paper).
* `knn_accuracy`: cosine-similarity k-nearest-neighbour majority vote.
* `cluster_assignment_scores`: NMI/ARI of the assignment of projected features
  to Orchestra's global centroids.
* `kmeans_cluster_scores`: NMI/ARI of k-means on the features: the same
  protocol for every method, Orchestra and the baselines alike.
* `alignment` / `uniformity`: Wang & Isola (2020)'s label-free scores of
  normalised projections of two views (lower is better for both), which the
  reference uses to select hyperparameters without labels.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn import cluster
from sklearn import linear_model
from sklearn import metrics as sk_metrics
from sklearn import preprocessing

# L-BFGS iterations for the probes: standardised features converge in far
# fewer; the cap only bounds the time of an ill-conditioned problem.
_PROBE_MAX_ITER = 1000
# Inverse L2 strength of the probes: sklearn's default, a mild penalty on
# standardised features that keeps separable data from diverging.
_PROBE_C = 1.0
# Test rows scored at once by `knn_accuracy`; bounds the similarity block in
# memory to `_KNN_BLOCK_ROWS * num_train` values.
_KNN_BLOCK_ROWS = 512
# scikit-learn's largest `random_state`.
_MAX_SEED = 2**32 - 1


def check_int(value: Any, name: str, *, low: int, high: int | None = None) -> None:
  """Raises TypeError/ValueError unless `value` is an int in [low, high]."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f'{name} must be an int, got {value!r} ({type(value).__name__})')
  if value < low:
    raise ValueError(f'{name} must be >= {low}, got {value!r}')
  if high is not None and value > high:
    raise ValueError(f'{name} must be <= {high}, got {value!r}')


def check_seed(seed: Any) -> None:
  """Raises unless `seed` is an int that numpy and scikit-learn both accept."""
  check_int(seed, 'seed', low=0, high=_MAX_SEED)


def check_features(features: Any, name: str) -> np.ndarray:
  """`features` as a finite float array `[N >= 1, D >= 1]`, else an error."""
  array = np.asarray(features)
  if array.dtype.kind != 'f':
    raise TypeError(f'{name} must be an array of floats, got dtype {array.dtype}')
  if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
    raise ValueError(
        f'{name} must be 2-D [num_examples >= 1, dim >= 1], got shape {array.shape}'
    )
  if not np.all(np.isfinite(array)):
    raise ValueError(f'{name} must be finite, got {np.sum(~np.isfinite(array))} NaN/inf entries')
  # float16 loses too much precision in sums of squares and dot products.
  return array.astype(np.promote_types(array.dtype, np.float32), copy=False)


def check_labels(labels: Any, name: str, num_examples: int, features_name: str) -> np.ndarray:
  """`labels` as a 1-D int array of length `num_examples`, else an error."""
  array = np.asarray(labels)
  if array.dtype.kind not in 'iu':
    raise TypeError(f'{name} must be an array of ints, got dtype {array.dtype}')
  if array.ndim != 1 or array.shape[0] != num_examples:
    raise ValueError(
        f'{name} must be 1-D with one label per row of {features_name} '
        f'({num_examples}), got shape {array.shape}'
    )
  return array


def _check_same_dim(train: np.ndarray, test: np.ndarray, train_name: str, test_name: str) -> None:
  if train.shape[1] != test.shape[1]:
    raise ValueError(
        f'{test_name} must have as many columns as {train_name} ({train.shape[1]}), '
        f'got {test.shape[1]}'
    )


def _check_split(
    train_features: Any, train_labels: Any, test_features: Any, test_labels: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Checks a train/test split of features and labels; returns the arrays."""
  train_x = check_features(train_features, 'train_features')
  train_y = check_labels(train_labels, 'train_labels', train_x.shape[0], 'train_features')
  test_x = check_features(test_features, 'test_features')
  test_y = check_labels(test_labels, 'test_labels', test_x.shape[0], 'test_features')
  _check_same_dim(train_x, test_x, 'train_features', 'test_features')
  return train_x, train_y, test_x, test_y


def _fit_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int
) -> float:
  """Top-1 test accuracy of logistic regression on standardised features."""
  if np.unique(train_y).size < 2:
    raise ValueError('train_labels must contain at least 2 classes to train a probe')
  scaler = preprocessing.StandardScaler().fit(train_x)
  probe = linear_model.LogisticRegression(
      C=_PROBE_C, solver='lbfgs', max_iter=_PROBE_MAX_ITER, random_state=seed
  )
  probe.fit(scaler.transform(train_x), train_y)
  return float(np.mean(probe.predict(scaler.transform(test_x)) == test_y))


def linear_probe(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    seed: int = 0,
) -> float:
  """Top-1 test accuracy of a multinomial logistic-regression probe.

  Features are standardised with the train statistics; the probe is L-BFGS
  logistic regression with `C=1.0` (multinomial for more than 2 classes).

  Args:
    train_features: `[N, D]` float features to fit on.
    train_labels: `[N]` int labels, at least 2 classes.
    test_features: `[M, D]` float features to score.
    test_labels: `[M]` int labels.
    seed: The regression's `random_state`. L-BFGS draws nothing, so today
      the result does not depend on it; kept so every metric takes a seed.

  Returns:
    The fraction of test examples classified correctly, in [0, 1].
  """
  check_seed(seed)
  return _fit_probe(*_check_split(train_features, train_labels, test_features, test_labels), seed)


def labelled_subset(labels: Any, labels_per_class: int, seed: int) -> np.ndarray:
  """Sorted indices of `labels_per_class` seeded draws from each class.

  The labelled set of `few_label_probe`, exposed so it can be reproduced.

  Raises ValueError if a class has fewer than `labels_per_class` examples:
  a smaller class would make the probe silently unbalanced.
  """
  labels = np.asarray(labels)
  if labels.dtype.kind not in 'iu':
    raise TypeError(f'labels must be an array of ints, got dtype {labels.dtype}')
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f'labels must be 1-D and non-empty, got shape {labels.shape}')
  check_int(labels_per_class, 'labels_per_class', low=1)
  check_seed(seed)
  rng = np.random.default_rng(seed)
  chosen = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    if members.size < labels_per_class:
      raise ValueError(
          f'labels_per_class={labels_per_class} but class {label} has only '
          f'{members.size} examples'
      )
    chosen.append(rng.choice(members, size=labels_per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def few_label_probe(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    labels_per_class: int = 10,
    seed: int = 0,
) -> float:
  """Top-1 test accuracy of `linear_probe` fit on a few labels per class.

  The train subset holds exactly `labels_per_class` examples of every class in
  `train_labels`, drawn without replacement with `seed`.

  Args:
    train_features: `[N, D]` float features to sample the labelled set from.
    train_labels: `[N]` int labels; every class needs `labels_per_class`.
    test_features: `[M, D]` float features to score.
    test_labels: `[M]` int labels.
    labels_per_class: Labelled examples per class (>= 1).
    seed: Seeds the draw (and the regression).

  Returns:
    The fraction of test examples classified correctly, in [0, 1].
  """
  train_x, train_y, test_x, test_y = _check_split(
      train_features, train_labels, test_features, test_labels
  )
  subset = labelled_subset(train_y, labels_per_class, seed)
  return _fit_probe(train_x[subset], train_y[subset], test_x, test_y, seed)


def _unit_rows(features: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm; all-zero rows stay zero (similarity 0)."""
  norms = np.linalg.norm(features, axis=1, keepdims=True)
  return features / np.where(norms > 0.0, norms, 1.0)


def knn_accuracy(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    k: int = 20,
) -> float:
  """Top-1 test accuracy of a cosine-similarity k-nearest-neighbour vote.

  Each test example takes the most common label among its `k` most similar
  train examples (cosine similarity of the L2-normalised features). A tie in
  votes goes to the tied class with the larger summed similarity.

  Args:
    train_features: `[N, D]` float features of the neighbours.
    train_labels: `[N]` int labels of the neighbours.
    test_features: `[M, D]` float features to classify.
    test_labels: `[M]` int labels.
    k: Neighbours per vote, 1 <= k <= N.

  Returns:
    The fraction of test examples classified correctly, in [0, 1].
  """
  train_x, train_y, test_x, test_y = _check_split(
      train_features, train_labels, test_features, test_labels
  )
  check_int(k, 'k', low=1)
  if k > train_x.shape[0]:
    raise ValueError(f'k must be <= the number of train examples ({train_x.shape[0]}), got {k}')
  classes, train_class = np.unique(train_y, return_inverse=True)
  train_unit, test_unit = _unit_rows(train_x), _unit_rows(test_x)
  correct = 0
  for start in range(0, test_unit.shape[0], _KNN_BLOCK_ROWS):
    similarity = test_unit[start:start + _KNN_BLOCK_ROWS] @ train_unit.T
    rows = np.arange(similarity.shape[0])[:, np.newaxis]
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    neighbour_class = train_class[neighbours]
    votes = np.zeros([similarity.shape[0], classes.size])
    np.add.at(votes, (rows, neighbour_class), 1.0)
    similarity_sums = np.zeros_like(votes)
    np.add.at(similarity_sums, (rows, neighbour_class), similarity[rows, neighbours])
    tied_best = votes == votes.max(axis=1, keepdims=True)
    predicted = classes[np.argmax(np.where(tied_best, similarity_sums, -np.inf), axis=1)]
    correct += int(np.sum(predicted == test_y[start:start + _KNN_BLOCK_ROWS]))
  return correct / test_unit.shape[0]


def _partition_scores(labels: np.ndarray, assigned: np.ndarray) -> dict[str, Any]:
  return {
      'nmi': float(sk_metrics.normalized_mutual_info_score(labels, assigned)),
      'ari': float(sk_metrics.adjusted_rand_score(labels, assigned)),
      'clusters_used': int(np.unique(assigned).size),
  }


def cluster_assignment_scores(
    test_features_projected: Any, centroids: Any, test_labels: Any
) -> dict[str, Any]:
  """How well assignment to given centroids recovers the test classes.

  Each row goes to the centroid of largest cosine similarity (rows and
  centroids L2-normalised), as Orchestra assigns its projections to the global
  centroids.

  Args:
    test_features_projected: `[M, P]` float projections of the test examples.
    centroids: `[K, P]` float centroids.
    test_labels: `[M]` int labels.

  Returns:
    `{'nmi': normalized mutual information, 'ari': adjusted Rand index,
    'clusters_used': number of distinct centroids assigned}`.
  """
  projections = check_features(test_features_projected, 'test_features_projected')
  labels = check_labels(test_labels, 'test_labels', projections.shape[0], 'test_features_projected')
  centroids = check_features(centroids, 'centroids')
  _check_same_dim(projections, centroids, 'test_features_projected', 'centroids')
  assigned = np.argmax(_unit_rows(projections) @ _unit_rows(centroids).T, axis=1)
  return _partition_scores(labels, assigned)


def kmeans_cluster_scores(
    features: Any, labels: Any, num_clusters: int, seed: int = 0
) -> dict[str, Any]:
  """How well k-means on the L2-normalised features recovers the classes.

  Gives methods without centroids of their own (raw pixels, a random encoder)
  NMI/ARI comparable to `cluster_assignment_scores`.

  Args:
    features: `[N, D]` float features.
    labels: `[N]` int labels.
    num_clusters: k of k-means, 1 <= num_clusters <= N.
    seed: Seeds the k-means initialisations (`n_init=10`, the best is kept).

  Returns:
    `{'nmi': ..., 'ari': ..., 'clusters_used': ...}` as in
    `cluster_assignment_scores`.
  """
  features = check_features(features, 'features')
  labels = check_labels(labels, 'labels', features.shape[0], 'features')
  check_int(num_clusters, 'num_clusters', low=1)
  check_seed(seed)
  if num_clusters > features.shape[0]:
    raise ValueError(
        f'num_clusters must be <= the number of examples ({features.shape[0]}), got {num_clusters}'
    )
  kmeans = cluster.KMeans(n_clusters=num_clusters, n_init=10, random_state=seed)
  assigned = kmeans.fit_predict(_unit_rows(features))
  return _partition_scores(labels, assigned)


def _check_unit_rows(array: Any, name: str) -> np.ndarray:
  array = check_features(array, name).astype(np.float64)
  if not np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-3):
    raise ValueError(f'{name} must hold L2-normalised rows (norm 1)')
  return array


def alignment(first_views: Any, second_views: Any, *, alpha: float = 2.0) -> float:
  """`E ||f(x) - f(x')||^alpha` over the rows' pairs of views (Wang & Isola 2020, alpha 2): lower is better."""
  first = _check_unit_rows(first_views, 'first_views')
  second = _check_unit_rows(second_views, 'second_views')
  if first.shape != second.shape:
    raise ValueError(f'second_views must have the shape of first_views {first.shape}, got {second.shape}')
  return float(np.mean(np.linalg.norm(first - second, axis=1) ** alpha))


def uniformity(projections: Any, *, t: float = 2.0) -> float:
  """`log E exp(-t ||f(x) - f(y)||^2)` over all pairs of distinct rows (Wang & Isola 2020, t 2): lower is better."""
  z = _check_unit_rows(projections, 'projections')
  if z.shape[0] < 2:
    raise ValueError(f'projections must have at least 2 rows, got {z.shape[0]}')
  n = z.shape[0]
  exponents = []
  for start in range(0, n, _KNN_BLOCK_ROWS):
    block = z[start:start + _KNN_BLOCK_ROWS]
    squared = np.maximum(2.0 - 2.0 * block @ z.T, 0.0)  # unit rows: ||a - b||^2 = 2 - 2 a.b
    rows = np.arange(start, start + len(block))
    keep = np.arange(n)[np.newaxis, :] > rows[:, np.newaxis]  # each pair once, never a row with itself
    exponents.append(-t * squared[keep])
  exponents = np.concatenate(exponents)
  return float(np.logaddexp.reduce(exponents) - np.log(exponents.size))
