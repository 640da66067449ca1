"""The views against the reference's torchvision transforms: each augmentation's statistics over many draws, not only shapes.

A frequency `p` measured over `n` images must lie within 4 standard errors of
the reference's probability (a false failure about once in 16,000 runs; the
seeds are fixed, so a run repeats).
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tff_orchestra.orchestra import augment

RNG = np.random.default_rng(0)
IMAGES = tf.constant(RNG.uniform(size=(64, 8, 8, 3)).astype(np.float32))
MANY = tf.constant(RNG.uniform(size=(4000, 8, 8, 3)).astype(np.float32))
SEED = tf.constant([3, 4])


def assert_frequency(hits, probability):
  hits = np.asarray(hits, bool).ravel()
  error = 4 * math.sqrt(probability * (1 - probability) / hits.size) + 1e-12
  assert abs(hits.mean() - probability) <= error, (hits.mean(), probability)


def changed(after, before):
  return np.any(np.abs(np.asarray(after) - np.asarray(before)) > 1e-6, axis=(1, 2, 3))


def test_views_repeat_for_a_seed_and_differ_across_seeds():
  first = augment.three_views(IMAGES, SEED)
  again = augment.three_views(IMAGES, SEED)
  other = augment.three_views(IMAGES, SEED + [1, 0])
  for a, b, c in zip(first, again, other):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_views_are_normalised_as_the_reference_normalises():
  view1, view2, view3, labels = augment.three_views(IMAGES, SEED, flip=False)
  for view in (view1, view2, view3):
    assert view.shape == IMAGES.shape
    assert float(tf.reduce_min(view)) >= -1.0 and float(tf.reduce_max(view)) <= 1.0
  np.testing.assert_allclose(augment.normalize(tf.constant([0.0, 0.5, 1.0])), [-1.0, 0.0, 1.0])


def torchvision_crop_params(rng, size, scale, ratio=(3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop.get_params for a square image, in numpy."""
  area = size * size
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if 0 < w <= size and 0 < h <= size:
      return rng.integers(0, size - h + 1), rng.integers(0, size - w + 1), h, w
  return 0, 0, size, size


@pytest.mark.parametrize('size,scale', [(8, (0.5, 1.0)), (32, (0.5, 1.0)), (32, (0.08, 1.0))])
def test_crop_boxes_are_drawn_as_torchvision_draws_them(size, scale):
  boxes = augment.crop_boxes(20000, size, SEED, scale).numpy()
  rng = np.random.default_rng(1)
  reference = np.array([torchvision_crop_params(rng, size, scale) for _ in range(20000)], np.float64)
  assert np.all(boxes == np.round(boxes)) and np.all(boxes[:, 2:] >= 1)
  assert np.all(boxes[:, :2] + boxes[:, 2:] <= size) and np.all(boxes[:, :2] >= 0)
  for column in range(4):  # top, left, height, width: the same means within 4 standard errors
    error = 4 * math.sqrt((boxes[:, column].var() + reference[:, column].var()) / 20000)
    assert abs(boxes[:, column].mean() - reference[:, column].mean()) <= error, column
  fraction = boxes[:, 2] * boxes[:, 3] / size**2
  assert fraction.min() >= scale[0] * 0.8 and fraction.max() <= 1.0  # rounding to whole pixels aside


@pytest.mark.parametrize('interpolation,pil_filter', [('bicubic', Image.BICUBIC), ('bilinear', Image.BILINEAR)])
def test_resized_crop_is_pils_resize_of_the_crop(interpolation, pil_filter):
  image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  for top, left, height, width in [(3, 5, 20, 17), (0, 0, 32, 32), (10, 2, 16, 28), (1, 1, 6, 6)]:
    pil = Image.fromarray(image).crop((left, top, left + width, top + height)).resize((32, 32), pil_filter)
    ours = augment.resized_crop(
        tf.constant(image[None] / 255.0, tf.float32), tf.constant([[top, left, height, width]], tf.float32),
        interpolation,
    )
    np.testing.assert_allclose(ours[0], np.asarray(pil) / 255.0, atol=1.5 / 255)  # PIL rounds to 8 bits after each pass


def test_flip_mirrors_half_the_images():
  flipped = augment.random_flip(MANY, SEED).numpy()
  mirrored = np.all(flipped == MANY.numpy()[:, :, ::-1], axis=(1, 2, 3))
  unchanged = np.all(flipped == MANY.numpy(), axis=(1, 2, 3))
  assert np.all(mirrored | unchanged)
  assert_frequency(mirrored, 0.5)


def test_jitter_applies_with_probability_0_8_in_a_uniform_random_order():
  jittered = augment.color_jitter(MANY, SEED, (0.4, 0.4, 0.2, 0.1), 0.8)
  assert_frequency(changed(jittered, MANY), 0.8)
  _, order = augment.jitter_parameters(40000, SEED, (0.4, 0.4, 0.2, 0.1))
  order = order.numpy()
  assert all(sorted(row) == [0, 1, 2, 3] for row in order[:100])
  for operation in range(4):
    assert_frequency(order[:, 0] == operation, 0.25)
  assert len({tuple(row) for row in order}) == 24


def test_jitter_is_the_four_operations_in_the_drawn_order():
  strengths = (0.4, 0.4, 0.2, 0.1)
  images = IMAGES[:16]
  jittered = augment.color_jitter(images, SEED, strengths, 1.0).numpy()
  factors, order = augment.jitter_parameters(16, SEED, strengths)
  for i in range(16):
    expected = images[i:i + 1]
    for operation in order[i].numpy():
      expected = augment.JITTER_OPERATIONS[operation](expected, factors[operation][i:i + 1])
    np.testing.assert_allclose(jittered[i], expected[0], atol=1e-6)


def test_jitter_factors_span_the_references_ranges():
  factors, _ = augment.jitter_parameters(20000, SEED, (0.4, 0.4, 0.2, 0.1))
  for factor, (low, high) in zip(factors, [(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
    values = factor.numpy().ravel()
    assert values.min() >= low and values.max() <= high
    assert abs(values.mean() - (low + high) / 2) <= 4 * (high - low) / math.sqrt(12 * values.size)


def test_each_jitter_operation_is_what_pil_and_torchvision_do():
  images = IMAGES[:4]
  factor = tf.constant([0.7, 1.3, 0.9, 1.1])[:, None, None, None]
  np.testing.assert_allclose(augment._brightness(images, factor), np.clip(images * factor, 0, 1), atol=1e-6)
  grey = tf.image.rgb_to_grayscale(images)
  mean = tf.reduce_mean(grey, axis=[1, 2, 3], keepdims=True)
  np.testing.assert_allclose(augment._contrast(images, factor), np.clip(mean + factor * (images - mean), 0, 1),
                             atol=1e-6)
  np.testing.assert_allclose(augment._saturation(images, factor), np.clip(grey + factor * (images - grey), 0, 1),
                             atol=1e-6)
  shifted = augment._hue(images, tf.constant([0.05, -0.05, 0.1, 0.0])[:, None, None, None])
  for i, delta in enumerate([0.05, -0.05, 0.1, 0.0]):
    np.testing.assert_allclose(shifted[i], tf.image.adjust_hue(images[i], delta), atol=1e-5)


def test_one_channel_images_keep_their_hue_and_saturation():
  grey = MANY[:64, ..., :1]
  factor = tf.fill([64, 1, 1, 1], 1.2)
  np.testing.assert_array_equal(augment._saturation(grey, factor), grey)
  np.testing.assert_array_equal(augment._hue(grey, factor - 1.1), grey)
  np.testing.assert_array_equal(augment.random_grayscale(grey, SEED, 1.0), grey)


def test_grayscale_applies_with_probability_0_2():
  grey = augment.random_grayscale(MANY, SEED, 0.2).numpy()
  is_grey = np.all(np.abs(grey - grey[..., :1]) < 1e-6, axis=(1, 2, 3))
  assert_frequency(is_grey, 0.2)


@pytest.mark.parametrize('probability', [0.5, 0.1, 1.0])
def test_blur_applies_with_its_probability_and_sigma_uniform_in_0_1_to_2(probability):
  impulses = np.zeros((8000, 5, 5, 1), np.float32)
  impulses[:, 2, 2, 0] = 1.0
  blurred = augment.random_blur(tf.constant(impulses), SEED, probability).numpy()
  centre, side = blurred[:, 2, 2, 0], blurred[:, 2, 3, 0]
  taps_centre = np.sqrt(centre)  # the separable kernel's 1-D taps: side, centre, side
  taps_side = side / taps_centre
  np.testing.assert_allclose(taps_centre + 2 * taps_side, 1.0, atol=1e-5)
  # torchvision's taps: exp(-x^2 / (2 sigma^2)) at x = -1, 0, 1, normalised. Below sigma 0.5 the side
  # taps vanish in float32, so count the blurs with sigma above 0.5: probability * (2 - 0.5) / 1.9.
  with np.errstate(divide='ignore'):
    sigma = np.sqrt(-0.5 / np.log(taps_side / taps_centre))
  wide = sigma > 0.5
  assert_frequency(wide, probability * 1.5 / 1.9)
  assert sigma[wide].max() <= 2.0 + 1e-3
  assert abs(sigma[wide].mean() - 1.25) <= 4 * 1.5 / math.sqrt(12 * wide.sum())


def test_blur_pads_by_reflection_as_torchvision():
  edge = np.zeros((1, 4, 4, 1), np.float32)
  edge[0, 0, :, 0] = 1.0  # the top row lit: reflection mirrors row 1 (dark) above it
  blurred = augment.random_blur(tf.constant(edge), SEED, 1.0).numpy()[0, :, 0, 0]
  assert blurred[0] < 1.0 and blurred[1] > 0.0 and blurred[2] == 0.0


def test_solarize_applies_with_probability_0_2_at_pils_threshold():
  solarized = augment.random_solarize(MANY, SEED, 0.2).numpy()
  inverted = changed(solarized, MANY)
  assert_frequency(inverted, 0.2)
  images = MANY.numpy()[inverted]
  np.testing.assert_allclose(solarized[inverted], np.where(images < 128 / 255, images, 1.0 - images))


def test_rotation_labels_are_uniform_and_rotate_each_image():
  turned, labels = augment.rotated(MANY, SEED)
  for k in range(4):
    assert_frequency(labels.numpy() == k, 0.25)
  for i in range(8):
    np.testing.assert_array_equal(turned[i], np.rot90(MANY.numpy()[i], k=int(labels[i]), axes=(0, 1)))


def test_view_three_is_a_fresh_draw_of_view_ones_transform_then_rotated():
  _, _, view3, labels = augment.three_views(IMAGES, SEED)
  first = augment.ORCHESTRA_VIEW_1
  unrotated = augment.view(IMAGES, SEED + [30, 0], first)
  np.testing.assert_array_equal(view3, augment.rotate(unrotated, labels))


def test_the_reference_transforms_and_the_digits_adaptation():
  assert augment.ORCHESTRA_VIEW_1 == augment.ViewSpec(
      crop_scale=(0.5, 1.0), crop_interpolation='bicubic', flip=True, jitter=(0.4, 0.4, 0.2, 0.1),
      jitter_probability=0.8, grayscale_probability=0.2, blur_probability=0.5, solarize_probability=0.0)
  assert (augment.ORCHESTRA_VIEW_2.blur_probability, augment.ORCHESTRA_VIEW_2.solarize_probability) == (0.1, 0.2)
  assert augment.BYOL_VIEW_1.blur_probability == 1.0
  adapted = augment.ORCHESTRA_VIEW_1.adapted(min_crop_area=0.6, flip=False)
  assert adapted.crop_scale == (0.6, 1.0) and not adapted.flip
  assert augment.ORCHESTRA_VIEW_1.adapted() == augment.ORCHESTRA_VIEW_1
  with pytest.raises(ValueError, match='crop_scale'):
    augment.ViewSpec(crop_scale=(0.0, 1.0))
  with pytest.raises(ValueError, match='blur_probability'):
    augment.ViewSpec(blur_probability=1.5)
