"""Augmented views of a batch, as the reference's torchvision transforms make them, with stateless (seeded) randomness.

A `ViewSpec` is one torchvision `Compose` of the reference (akhilmathurs/orchestra,
`utils.py`), in its order:

    RandomResizedCrop(size, scale, ratio (3/4, 4/3), bicubic or bilinear)
    RandomHorizontalFlip(0.5)
    RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)  # the four in random order
    RandomGrayscale(p)
    RandomApply([GaussianBlur(kernel 3, sigma ~ U(0.1, 2.0))], p)         # reflect padding
    Solarization(p)                                                       # PIL's threshold 128
    Normalize((0.5,) * C, (0.5,) * C)                                     # [0, 1] -> [-1, 1]

Each image draws its own parameters, as each call of a torchvision transform
does. Crop boxes are whole pixels drawn as torchvision draws them (ten tries,
then the whole image); the resize is PIL's (Keys cubic, a = -0.5, or the
triangle filter, taps inside the box, normalised), on floats instead of 8-bit
images. Jitter follows PIL's `ImageEnhance` (brightness scales, contrast and
saturation blend with the grey mean / grey image) and torchvision's hue shift.
On one-channel images saturation, hue and grayscale change nothing, as in
torchvision. Inputs are floats in [0, 1], square; views are normalised.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import tensorflow as tf

CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params
BLUR_SIGMA = (0.1, 2.0)
SOLARIZE_THRESHOLD = 128.0 / 255.0  # PIL's ImageOps.solarize(threshold=128)
NUM_ROTATIONS = 4


def _cubic(x: tf.Tensor) -> tf.Tensor:
  """Keys' cubic kernel with a = -0.5, PIL's BICUBIC."""
  a, x = -0.5, tf.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
  return tf.where(x < 1.0, near, tf.where(x < 2.0, far, 0.0))


def _triangle(x: tf.Tensor) -> tf.Tensor:
  return tf.maximum(1.0 - tf.abs(x), 0.0)


_KERNELS = {'bicubic': _cubic, 'bilinear': _triangle}


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """One view's transform, with the reference's values as defaults (`OrchestraTransform`'s first view)."""

  crop_scale: tuple[float, float] = (0.5, 1.0)
  crop_interpolation: str = 'bicubic'
  flip: bool = True
  jitter: Optional[tuple[float, float, float, float]] = (0.4, 0.4, 0.2, 0.1)
  jitter_probability: float = 0.8
  grayscale_probability: float = 0.2
  blur_probability: float = 0.5
  solarize_probability: float = 0.0

  def __post_init__(self):
    low, high = self.crop_scale
    if not 0.0 < low <= high <= 1.0:
      raise ValueError(f'crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}')
    if self.crop_interpolation not in _KERNELS:
      raise ValueError(f'crop_interpolation must be one of {sorted(_KERNELS)}, got {self.crop_interpolation!r}')
    for name in ('jitter_probability', 'grayscale_probability', 'blur_probability', 'solarize_probability'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')

  def adapted(self, *, min_crop_area: Optional[float] = None, flip: bool = True) -> 'ViewSpec':
    """This view with another smallest crop area (None keeps the reference's) and flips off if `flip` is False."""
    crop_scale = self.crop_scale if min_crop_area is None else (min_crop_area, 1.0)
    return dataclasses.replace(self, crop_scale=crop_scale, flip=self.flip and flip)


# The reference's transforms (utils.py), by the view they make.
ORCHESTRA_VIEW_1 = ViewSpec()  # also SimCLR's and SimSiam's two views, and the view Orchestra rotates
ORCHESTRA_VIEW_2 = ViewSpec(blur_probability=0.1, solarize_probability=0.2)  # also BYOL's second view
BYOL_VIEW_1 = ViewSpec(blur_probability=1.0)
SPECLOSS_VIEW_1 = ViewSpec(crop_scale=(0.08, 1.0), crop_interpolation='bilinear', jitter=None,
                           jitter_probability=0.0, grayscale_probability=0.0, blur_probability=0.0)
SPECLOSS_VIEW_2 = ViewSpec(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1))


def _uniform(seed, shape, low=0.0, high=1.0):
  return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _per_image(images: tf.Tensor) -> list:
  return [tf.shape(images)[0], 1, 1, 1]


def crop_boxes(batch: tf.Tensor, size: int, seed: tf.Tensor, scale: tuple[float, float]) -> tf.Tensor:
  """[batch, 4] integer boxes (top, left, height, width) drawn as torchvision's RandomResizedCrop draws them.

  Up to ten tries of an area fraction in `scale` and a log-uniform aspect
  ratio in [3/4, 4/3], rounded to whole pixels; the first that fits is
  kept, else the whole (square) image.
  """
  area = float(size * size) * _uniform(seed + [0, 1], [batch, CROP_TRIES], scale[0], scale[1])
  ratio = tf.exp(_uniform(seed + [0, 2], [batch, CROP_TRIES], math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
  width = tf.round(tf.sqrt(area * ratio))
  height = tf.round(tf.sqrt(area / ratio))
  fits = (width > 0) & (width <= size) & (height > 0) & (height <= size)
  first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
  any_fit = tf.reduce_any(fits, axis=1)
  pick = lambda t: tf.where(any_fit, tf.gather(t, first, batch_dims=1), float(size))  # noqa: E731
  height, width = pick(height), pick(width)
  top = tf.floor(_uniform(seed + [0, 3], [batch]) * (size - height + 1.0))
  left = tf.floor(_uniform(seed + [0, 4], [batch]) * (size - width + 1.0))
  return tf.stack([top, left, height, width], axis=1)


def _resize_matrix(start: tf.Tensor, length: tf.Tensor, size: int, kernel) -> tf.Tensor:
  """[batch, size out, size in]: PIL's upsampling of pixels [start, start + length) to `size` pixels."""
  out = tf.range(size, dtype=tf.float32)[tf.newaxis, :, tf.newaxis]
  pixel = tf.range(size, dtype=tf.float32)[tf.newaxis, tf.newaxis, :]
  start, length = start[:, tf.newaxis, tf.newaxis], length[:, tf.newaxis, tf.newaxis]
  centre = (out + 0.5) * length / size  # in the box's coordinates, as PIL's resample
  inside = (pixel >= start) & (pixel < start + length)
  weights = tf.where(inside, kernel(pixel - start + 0.5 - centre), 0.0)
  return weights / tf.reduce_sum(weights, axis=2, keepdims=True)


def random_resized_crop(images: tf.Tensor, seed: tf.Tensor, scale: tuple[float, float],
                        interpolation: str = 'bicubic') -> tf.Tensor:
  """Each image cropped to a box from `crop_boxes` and resized back to its size (`interpolation` as PIL's)."""
  return resized_crop(images, crop_boxes(tf.shape(images)[0], images.shape[1], seed, scale), interpolation)


def resized_crop(images: tf.Tensor, boxes: tf.Tensor, interpolation: str = 'bicubic') -> tf.Tensor:
  """Each image's box (top, left, height, width in pixels) resized to the image's size, as PIL's `resize`."""
  size = images.shape[1]
  kernel = _KERNELS[interpolation]
  rows = _resize_matrix(boxes[:, 0], boxes[:, 2], size, kernel)
  columns = _resize_matrix(boxes[:, 1], boxes[:, 3], size, kernel)
  # Two passes, each clipped, as PIL resamples 8-bit images: horizontal, then vertical.
  across = tf.clip_by_value(tf.einsum('bpqc,brq->bprc', images, columns), 0.0, 1.0)
  return tf.clip_by_value(tf.einsum('bop,bprc->borc', rows, across), 0.0, 1.0)


def random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  flip = _uniform(seed, _per_image(images)) < 0.5
  return tf.where(flip, tf.reverse(images, axis=[2]), images)


def _grey(images: tf.Tensor) -> tf.Tensor:
  """The luma of RGB images (one-channel images are their own), keeping the channel count."""
  if images.shape[-1] == 3:
    return tf.repeat(tf.image.rgb_to_grayscale(images), 3, axis=-1)
  return images


def _brightness(images, factor):
  return tf.clip_by_value(images * factor, 0.0, 1.0)


def _contrast(images, factor):
  mean = tf.reduce_mean(_grey(images), axis=[1, 2, 3], keepdims=True)
  return tf.clip_by_value(mean + factor * (images - mean), 0.0, 1.0)


def _saturation(images, factor):
  grey = _grey(images)
  return tf.clip_by_value(grey + factor * (images - grey), 0.0, 1.0)


def _hue(images, shift):
  if images.shape[-1] != 3:
    return images
  hsv = tf.image.rgb_to_hsv(images)
  hue = tf.math.floormod(hsv[..., :1] + shift, 1.0)
  return tf.clip_by_value(tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1)), 0.0, 1.0)


def color_jitter(images: tf.Tensor, seed: tf.Tensor, strengths: tuple[float, float, float, float],
                 probability: float) -> tf.Tensor:
  """torchvision's `RandomApply([ColorJitter(b, c, s, h)], p)`: factors 1 +- b, c, s and a hue shift +- h,
  applied in an order drawn per image."""
  factors, order = jitter_parameters(tf.shape(images)[0], seed, strengths)
  jittered = images
  for position in range(len(JITTER_OPERATIONS)):
    chosen = order[:, position][:, tf.newaxis, tf.newaxis, tf.newaxis]
    candidates = [operation(jittered, factor) for operation, factor in zip(JITTER_OPERATIONS, factors)]
    # tf.equal, not ==: Tensor.__eq__ compares identity in the graphs TFF builds.
    jittered = tf.add_n([tf.where(tf.equal(chosen, k), candidate, 0.0) for k, candidate in enumerate(candidates)])
  apply = _uniform(seed + [0, 6], _per_image(images)) < probability
  return tf.where(apply, jittered, images)


JITTER_OPERATIONS = (_brightness, _contrast, _saturation, _hue)


def jitter_parameters(batch: tf.Tensor, seed: tf.Tensor, strengths: tuple[float, float, float, float]):
  """(the four per-image factors [batch, 1, 1, 1] of `JITTER_OPERATIONS`, each image's order of them [batch, 4])."""
  shape = [batch, 1, 1, 1]
  brightness, contrast, saturation, hue = strengths
  factors = (
      _uniform(seed + [0, 1], shape, 1.0 - brightness, 1.0 + brightness),
      _uniform(seed + [0, 2], shape, 1.0 - contrast, 1.0 + contrast),
      _uniform(seed + [0, 3], shape, 1.0 - saturation, 1.0 + saturation),
      _uniform(seed + [0, 4], shape, -hue, hue),
  )
  order = tf.argsort(_uniform(seed + [0, 5], [batch, 4]), axis=1)  # a uniform permutation per image
  return factors, order


def random_grayscale(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
  apply = _uniform(seed, _per_image(images)) < probability
  return tf.where(apply, _grey(images), images)


def random_blur(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
  """torchvision's `GaussianBlur(3, sigma=(0.1, 2.0))` with `probability`: sigma ~ U(0.1, 2) per image, reflect padding."""
  shape = _per_image(images)
  sigma = _uniform(seed + [0, 1], shape, *BLUR_SIGMA)
  side = tf.exp(-0.5 / tf.square(sigma))  # the taps at -1 and +1 (the centre's is 1), before normalising
  side = side / (1.0 + 2.0 * side)
  centre = 1.0 - 2.0 * side
  padded = tf.pad(images, [[0, 0], [1, 1], [0, 0], [0, 0]], mode='REFLECT')
  blurred = centre * padded[:, 1:-1] + side * (padded[:, :-2] + padded[:, 2:])
  padded = tf.pad(blurred, [[0, 0], [0, 0], [1, 1], [0, 0]], mode='REFLECT')
  blurred = centre * padded[:, :, 1:-1] + side * (padded[:, :, :-2] + padded[:, :, 2:])
  apply = _uniform(seed + [0, 2], shape) < probability
  return tf.where(apply, blurred, images)


def random_solarize(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
  apply = _uniform(seed, _per_image(images)) < probability
  return tf.where(apply, tf.where(images < SOLARIZE_THRESHOLD, images, 1.0 - images), images)


def normalize(images: tf.Tensor) -> tf.Tensor:
  """The reference's `Normalize((0.5,) * C, (0.5,) * C)`: [0, 1] -> [-1, 1]; evaluation inputs get it too."""
  return (images - 0.5) / 0.5


def view(images: tf.Tensor, seed: tf.Tensor, spec: ViewSpec) -> tf.Tensor:
  """One normalised view of each image, by `spec`'s transforms in the reference's order."""
  images = random_resized_crop(images, seed + [1, 0], spec.crop_scale, spec.crop_interpolation)
  if spec.flip:
    images = random_flip(images, seed + [2, 0])
  if spec.jitter is not None and spec.jitter_probability > 0:
    images = color_jitter(images, seed + [3, 0], spec.jitter, spec.jitter_probability)
  if spec.grayscale_probability > 0 and images.shape[-1] == 3:
    images = random_grayscale(images, seed + [4, 0], spec.grayscale_probability)
  if spec.blur_probability > 0:
    images = random_blur(images, seed + [5, 0], spec.blur_probability)
  if spec.solarize_probability > 0:
    images = random_solarize(images, seed + [6, 0], spec.solarize_probability)
  return normalize(images)


def rotate(images: tf.Tensor, rotations: tf.Tensor) -> tf.Tensor:
  """Rotates each square image by `rotations[i] * 90` degrees (counter-clockwise)."""
  candidates = tf.stack([tf.image.rot90(images, k) for k in range(NUM_ROTATIONS)])  # [4, B, H, W, C]
  return tf.gather_nd(
      tf.transpose(candidates, [1, 0, 2, 3, 4]),
      tf.stack([tf.range(tf.shape(images)[0]), rotations], axis=1),
  )


def rotated(images: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(each image turned by a uniformly drawn multiple of 90 degrees, that multiple in 0..3)."""
  labels = tf.random.stateless_uniform([tf.shape(images)[0]], seed=seed, maxval=NUM_ROTATIONS, dtype=tf.int32)
  return rotate(images, labels), labels


def three_views(
    images: tf.Tensor, seed: tf.Tensor, *, min_crop_area: Optional[float] = None, flip: bool = True
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Orchestra's (view 1, view 2, rotated view 3, rotation labels), as the reference's `OrchestraTransform`.

  View 3 is a fresh draw of view 1's transform, then rotated. `min_crop_area`
  replaces the crops' smallest area (None: the reference's 0.5); `flip`
  False turns flips off (for data whose classes are not mirror-symmetric,
  such as digits).
  """
  first = ORCHESTRA_VIEW_1.adapted(min_crop_area=min_crop_area, flip=flip)
  second = ORCHESTRA_VIEW_2.adapted(min_crop_area=min_crop_area, flip=flip)
  view3, labels = rotated(view(images, seed + [30, 0], first), seed + [32, 0])
  return view(images, seed + [10, 0], first), view(images, seed + [20, 0], second), view3, labels
