"""The three views: seeded (the same seed, the same views), in range, and each transform doing what it says."""

import numpy as np
import tensorflow as tf

from tff_orchestra.orchestra import augment

RNG = np.random.default_rng(0)
IMAGES = tf.constant(RNG.uniform(size=(64, 8, 8, 3)).astype(np.float32))
SEED = tf.constant([3, 4])


def test_views_repeat_for_a_seed_and_differ_across_seeds():
  first = augment.three_views(IMAGES, SEED)
  again = augment.three_views(IMAGES, SEED)
  other = augment.three_views(IMAGES, SEED + [1, 0])
  for a, b, c in zip(first, again, other):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_views_keep_shape_and_range_and_labels_are_rotations():
  view1, view2, view3, labels = augment.three_views(IMAGES, SEED, min_crop_area=0.5, flip=False)
  for view in (view1, view2, view3):
    assert view.shape == IMAGES.shape
    assert float(tf.reduce_min(view)) >= 0.0 and float(tf.reduce_max(view)) <= 1.0
  assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) == 4  # 64 draws


def test_rotate_turns_each_image_by_its_label():
  labels = tf.constant([0, 1, 2, 3] * 16)
  rotated = augment.rotate(IMAGES, labels).numpy()
  for i in range(4):
    np.testing.assert_array_equal(rotated[i], np.rot90(IMAGES.numpy()[i], k=i, axes=(0, 1)))


def test_a_full_area_crop_keeps_the_image_and_a_flip_mirrors_it():
  kept = augment.random_resized_crop(IMAGES, SEED, min_area=1.0).numpy()
  # Area 1 and aspect ratio within the crop range: at most the aspect changes the box; check
  # the crop is a resampling of the image (its mean is close to the image's).
  np.testing.assert_allclose(kept.mean(axis=(1, 2, 3)), IMAGES.numpy().mean(axis=(1, 2, 3)), atol=0.15)
  flipped = augment.random_flip(IMAGES, SEED).numpy()
  mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, IMAGES.numpy())]
  unchanged = [np.array_equal(f, i) for f, i in zip(flipped, IMAGES.numpy())]
  assert all(m or u for m, u in zip(mirrored, unchanged)) and 10 < sum(mirrored) < 54


def test_solarize_inverts_bright_pixels_only(monkeypatch):
  monkeypatch.setattr(augment, 'SOLARIZE_PROBABILITY', 1.0)
  solarized = augment.random_solarize(IMAGES, SEED).numpy()
  images = IMAGES.numpy()
  np.testing.assert_allclose(solarized, np.where(images < 0.5, images, 1.0 - images))


def test_grayscale_leaves_one_channel_images_alone():
  gray = IMAGES[..., :1]
  np.testing.assert_array_equal(augment.random_grayscale(gray, SEED), gray)
