"""Tests for keras_tricks.augment: semantics against NumPy/TF/torchvision references, statistics."""

import math
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from scipy import stats

from keras_tricks import augment

# A test of uniformity fails with probability 1e-4 when the sampler is right.
P_MIN = 1e-4


def np_(x):
    return ops.convert_to_numpy(x)


def twin_transformation(layer_cls, shape, **kwargs):
    """The transformation a fresh `layer_cls(**kwargs)` with the same seed will draw first."""
    return layer_cls(**kwargs).get_random_transformation(shape)


def all_layers():
    return [
        augment.RandomPadCrop(padding=2, seed=1),
        augment.RandomFlip(seed=2),
        augment.Cutout(size=4, seed=3),
        augment.RandomResizedCrop(12, 10, seed=4),
        augment.ColorJitter(seed=5),
        augment.PCALighting(seed=6),
        augment.MixUp(alpha=0.4, seed=7),
        augment.CutMix(alpha=1.0, seed=8),
    ]


# ---------------------------------------------------------------------------------------------
# RandomFlip
def test_random_flip_flips_each_image_independently_at_rate_one_half():
    n = 4000
    x = np.tile(np.array([0.0, 1.0], "float32").reshape(1, 1, 2, 1), (n, 1, 1, 1))
    y = np_(augment.RandomFlip(seed=0)(x, training=True))
    flipped = y[:, 0, 0, 0] == 1.0
    # Every output is the image or its mirror; the count is Binomial(n, 1/2): 4 sigma band.
    assert np.all((y == x) | (y == x[:, :, ::-1])), "output is neither the image nor its flip"
    assert abs(flipped.mean() - 0.5) < 4 * math.sqrt(0.25 / n)


def test_random_flip_vertical_mode_flips_rows_only():
    x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    y = np_(augment.RandomFlip(mode="vertical", rate=1.0)(x, training=True))
    np.testing.assert_array_equal(y, x[:, ::-1])


@pytest.mark.parametrize(
    ("mode", "mirror"),
    [
        ("horizontal", lambda x: x[:, :, ::-1]),
        ("vertical", lambda x: x[:, ::-1]),
        ("horizontal_and_vertical", lambda x: x[:, ::-1, ::-1]),
    ],
)
def test_random_flip_at_rate_one_mirrors_every_pixel_keeping_channel_order(mode, mirror):
    x = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5, 3)).astype("uint8")
    y = np_(augment.RandomFlip(mode=mode, rate=1.0, seed=0)(x, training=True))
    np.testing.assert_array_equal(y, mirror(x))


# ---------------------------------------------------------------------------------------------
# RandomPadCrop
@pytest.mark.parametrize("fill_mode", ["reflect", "symmetric", "edge", "constant"])
def test_pad_crop_equals_numpy_pad_then_crop_at_each_images_offset(fill_mode):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 9, 7, 3)).astype("uint8")
    p = 3
    kwargs = {"padding": p, "fill_mode": fill_mode, "fill_value": 17, "seed": 11}
    offsets = np_(twin_transformation(augment.RandomPadCrop, x.shape, **kwargs)["offsets"])
    y = np_(augment.RandomPadCrop(**kwargs)(x, training=True))
    np_kwargs = {"constant_values": 17} if fill_mode == "constant" else {}
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=fill_mode, **np_kwargs)
    for b, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(y[b], padded[b, dy : dy + 9, dx : dx + 7])
    # Per-image offsets, unlike keras.layers.RandomCrop's one offset per batch.
    assert len({tuple(o) for o in offsets}) > 1


@pytest.mark.parametrize("fill_mode", ["symmetric", "edge", "constant"])
@pytest.mark.parametrize("padding", [5, 9, 13])
def test_pad_crop_with_padding_larger_than_the_image_equals_numpy_pad(fill_mode, padding):
    # Padding beyond the image: np.pad extends symmetric padding periodically (period 2 * size)
    # and the constant/edge fills flatly; every source index must stay inside its own image
    # (the flat gather would otherwise read a neighbouring image's pixels).
    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, size=(12, 4, 3, 2)).astype("uint8")
    kwargs = {"padding": padding, "fill_mode": fill_mode, "fill_value": 0, "seed": 5}
    offsets = np_(twin_transformation(augment.RandomPadCrop, x.shape, **kwargs)["offsets"])
    y = np_(augment.RandomPadCrop(**kwargs)(x, training=True))
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = np.pad(
        x, pad, mode=fill_mode, **({"constant_values": 0} if fill_mode == "constant" else {})
    )
    for b, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(y[b], padded[b, dy : dy + 4, dx : dx + 3])


def test_pad_crop_offsets_are_uniform_over_zero_to_two_padding():
    p, n = 4, 20000
    offsets = np_(
        augment.RandomPadCrop(padding=p, seed=0).get_random_transformation((n, 32, 32, 3))[
            "offsets"
        ]
    )
    assert offsets.min() == 0 and offsets.max() == 2 * p
    # Joint (dy, dx) over the 81 cells: chi-square against the uniform distribution.
    cells = np.bincount(offsets[:, 0] * (2 * p + 1) + offsets[:, 1], minlength=(2 * p + 1) ** 2)
    assert stats.chisquare(cells).pvalue > P_MIN


# ---------------------------------------------------------------------------------------------
# Cutout
def test_cutout_erases_size_squared_inside_and_clipped_area_at_borders():
    n, h, w, size = 400, 12, 10, 4
    centres = np_(twin_transformation(augment.Cutout, (n, h, w, 1), size=size, seed=5)["centres"])
    y = np_(augment.Cutout(size=size, seed=5)(np.ones((n, h, w, 1), "float32"), training=True))
    erased = (y == 0).sum(axis=(1, 2, 3))
    # DeVries & Taylor: the square [c - size//2, c - size//2 + size) clipped to the image.
    y0, x0 = centres[:, 0] - size // 2, centres[:, 1] - size // 2
    expected = (np.minimum(y0 + size, h) - np.maximum(y0, 0)) * (
        np.minimum(x0 + size, w) - np.maximum(x0, 0)
    )
    np.testing.assert_array_equal(erased, expected)
    inside = (y0 >= 0) & (y0 + size <= h) & (x0 >= 0) & (x0 + size <= w)
    assert inside.any() and (~inside).any()
    assert np.all(erased[inside] == size * size)


@pytest.mark.parametrize(("dtype", "fill_value"), [("uint8", 0.0), ("float32", 0.5)])
def test_cutout_fills_the_square_on_every_channel_and_keeps_the_rest(dtype, fill_value):
    n, h, w, c, size = 64, 9, 7, 3, 4
    x = np.random.default_rng(0).integers(1, 256, size=(n, h, w, c)).astype(dtype)
    centres = np_(twin_transformation(augment.Cutout, x.shape, size=size, seed=2)["centres"])
    y = np_(augment.Cutout(size=size, fill_value=fill_value, seed=2)(x, training=True))
    expected = x.copy()  # NumPy slicing of the clipped square (DeVries & Taylor's rule)
    for b, (cy, cx) in enumerate(centres):
        y0, x0 = cy - size // 2, cx - size // 2
        expected[b, max(y0, 0) : y0 + size, max(x0, 0) : x0 + size] = fill_value
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected)


def test_cutout_centres_are_uniform_over_the_pixels():
    n, h, w = 20000, 16, 8
    c = np_(augment.Cutout(seed=1).get_random_transformation((n, h, w, 3))["centres"])
    assert c[:, 0].min() == 0 and c[:, 0].max() == h - 1 and c[:, 1].max() == w - 1
    assert stats.chisquare(np.bincount(c[:, 0] * w + c[:, 1], minlength=h * w)).pvalue > P_MIN


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop
def torchvision_get_params(height, width, scale, ratio, rng):
    """torchvision.transforms.RandomResizedCrop.get_params (v0.17), transcribed with NumPy."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    # Fallback to central crop
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:  # whole image
        w = width
        h = height
    i = (height - h) // 2
    j = (width - w) // 2
    return i, j, h, w


@pytest.mark.parametrize(
    "scale, ratio",
    [((0.9, 1.0), (5.0, 6.0)), ((0.9, 1.0), (0.1, 0.2)), ((1.5, 2.0), (0.75, 1.33))],
    ids=["too-wide", "too-tall", "too-large"],
)
def test_random_resized_crop_falls_back_to_torchvision_centre_crop(scale, ratio):
    h, w = 40, 30
    # With these ranges every one of the 10 tries is rejected, so torchvision returns its
    # deterministic centre crop whatever the random draws.
    expected = torchvision_get_params(h, w, scale, ratio, np.random.default_rng(0))
    layer = augment.RandomResizedCrop(8, 8, scale=scale, ratio=ratio, seed=0)
    boxes = np_(layer.get_random_transformation((64, h, w, 3))["boxes"])
    np.testing.assert_array_equal(boxes, np.tile(expected, (64, 1)))


def test_random_resized_crop_area_in_scale_and_aspect_log_uniform_in_ratio():
    n, size = 20000, 256
    scale, ratio = (0.08, 0.25), (3 / 4, 4 / 3)
    layer = augment.RandomResizedCrop(224, 224, scale=scale, ratio=ratio, seed=3)
    boxes = np_(layer.get_random_transformation((n, size, size, 3))["boxes"]).astype(float)
    top, left, h, w = boxes.T
    assert top.min() >= 0 and left.min() >= 0
    assert (top + h).max() <= size and (left + w).max() <= size
    # w and h are rounded, so the area is within scale up to one pixel row/column.
    frac = h * w / size**2
    slack = (h + w + 1) / size**2
    assert np.all(frac >= scale[0] - slack) and np.all(frac <= scale[1] + slack)
    log_aspect = np.log(w / h)
    assert log_aspect.min() >= math.log(ratio[0]) - 0.02
    assert log_aspect.max() <= math.log(ratio[1]) + 0.02
    # With scale <= 0.25 every first try fits. The area and log(w / h) are U(scale) and
    # U(log ratio) only before w and h are rounded to integers, and rounding makes both
    # lumpy on a 256-pixel image, so the reference is the distribution of the *rounded*
    # values: torchvision's get_params (transcribed above) drawn n times. A chi-square test
    # of homogeneity on a 2 x 10 table says whether both samples come from one distribution.
    rng = np.random.default_rng(12345)
    ref = np.array([torchvision_get_params(size, size, scale, ratio, rng) for _ in range(n)])
    ref_h, ref_w = ref[:, 2].astype(float), ref[:, 3].astype(float)
    area_edges = np.linspace(scale[0] - 0.005, scale[1] + 0.005, 11)
    aspect_edges = np.linspace(math.log(ratio[0]) - 0.02, math.log(ratio[1]) + 0.02, 11)
    for ours, theirs, edges in [
        (frac, ref_h * ref_w / size**2, area_edges),
        (log_aspect, np.log(ref_w / ref_h), aspect_edges),
    ]:
        table = [np.histogram(ours, edges)[0], np.histogram(theirs, edges)[0]]
        assert stats.chi2_contingency(table).pvalue > P_MIN


def test_random_resized_crop_equals_tf_crop_then_bilinear_resize():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(8, 37, 29, 3)).astype("float32")
    kwargs = {"height": 16, "width": 20, "seed": 9}
    boxes = np_(twin_transformation(augment.RandomResizedCrop, x.shape, **kwargs)["boxes"])
    y = np_(augment.RandomResizedCrop(**kwargs)(x, training=True))
    for b, (top, left, h, w) in enumerate(boxes):
        crop = x[b, top : top + h, left : left + w]
        ref = tf.image.resize(crop, (16, 20), method="bilinear", antialias=False).numpy()
        np.testing.assert_allclose(y[b], ref, rtol=1e-5, atol=1e-3)


def test_random_resized_crop_nearest_equals_tf_nearest_resize():
    x = np.arange(8 * 20 * 18 * 1, dtype="float32").reshape(8, 20, 18, 1)
    kwargs = {"height": 9, "width": 11, "interpolation": "nearest", "seed": 2}
    boxes = np_(twin_transformation(augment.RandomResizedCrop, x.shape, **kwargs)["boxes"])
    y = np_(augment.RandomResizedCrop(**kwargs)(x, training=True))
    for b, (top, left, h, w) in enumerate(boxes):
        ref = tf.image.resize(x[b, top : top + h, left : left + w], (9, 11), method="nearest")
        np.testing.assert_array_equal(y[b], ref.numpy())


def test_random_resized_crop_inference_is_keras_centre_crop_resize():
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 40, 30, 3)).astype("float32")
    y = augment.RandomResizedCrop(12, 10, seed=0)(x, training=False)
    ref = keras.layers.Resizing(12, 10, crop_to_aspect_ratio=True)(x)
    np.testing.assert_allclose(np_(y), np_(ref), rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# ColorJitter
def test_color_jitter_coefficients_are_uniform_in_one_plus_minus_x():
    n = 20000
    layer = augment.ColorJitter(brightness=0.4, saturation=0.3, hue=0.2, seed=0)
    t = {k: np_(v) for k, v in layer.get_random_transformation((n, 8, 8, 3)).items()}
    for name, x in (("brightness", 0.4), ("saturation", 0.3), ("hue", 0.2)):
        c = t[name]
        assert c.min() >= 1 - x and c.max() <= 1 + x, name
        assert stats.chisquare(np.histogram(c, bins=10, range=(1 - x, 1 + x))[0]).pvalue > P_MIN
    # Random order of saturation and hue per image: a fair coin.
    assert abs(t["saturation_first"].mean() - 0.5) < 4 * math.sqrt(0.25 / n)


def reference_color_jitter(img, b, s, c, saturation_first):
    """fb.resnet.torch Brightness/Saturation and MXNet HueJitterAug, applied one after another."""
    luma = np.array([0.299, 0.587, 0.114])

    def brightness(x):  # blend(img, zeros, b)
        return x * b

    def saturation(x):  # blend(img, grayscale(img), s)
        grey = (x * luma).sum(-1, keepdims=True)
        return x * s + grey * (1 - s)

    def hue(x):  # mxnet.image.HueJitterAug with alpha = c - 1 (exact YIQ inverse)
        tyiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
        ityiq = np.linalg.inv(tyiq)
        u, w = np.cos((c - 1) * np.pi), np.sin((c - 1) * np.pi)
        bt = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
        t = np.dot(np.dot(ityiq, bt), tyiq).T
        return np.dot(x, t)

    ops_ = [brightness, saturation, hue] if saturation_first else [brightness, hue, saturation]
    for op in ops_:
        img = op(img)
    return img


@pytest.mark.parametrize("xla", [False, True], ids=["matmul-form", "xla-broadcast-form"])
@pytest.mark.parametrize("saturation_first", [True, False])
def test_color_jitter_equals_sequential_reference_for_fixed_coefficients(saturation_first, xla):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(3, 5, 4, 3)).astype("float32")
    coeffs = np.array([[0.7, 1.3, 0.65], [1.2, 0.6, 1.35], [1.0, 1.0, 1.0]], "float32")
    t = {
        "brightness": coeffs[:, 0],
        "saturation": coeffs[:, 1],
        "hue": coeffs[:, 2],
        "saturation_first": np.array([saturation_first] * 3),
    }
    layer = augment.ColorJitter()
    y = np_(tf.function(lambda images: layer.transform(images, t), jit_compile=xla)(x))
    for i in range(3):
        ref = reference_color_jitter(x[i].astype("float64"), *coeffs[i], saturation_first)
        np.testing.assert_allclose(y[i], ref, atol=2e-5)
    np.testing.assert_allclose(y[2], x[2], atol=1e-6)  # coefficients 1: identity


def test_color_jitter_rounds_and_clips_uint8_images():
    x = np.array([[[[250, 10, 128]]]], "uint8")
    t = {
        "brightness": np.array([1.3], "float32"),
        "saturation": np.array([1.0], "float32"),
        "hue": np.array([1.0], "float32"),
        "saturation_first": np.array([True]),
    }
    y = np_(augment.ColorJitter().transform(x, t))
    np.testing.assert_array_equal(y, np.clip(np.round(x * 1.3), 0, 255).astype("uint8"))


# ---------------------------------------------------------------------------------------------
# PCALighting
def reference_lighting(img, alpha, eigval, eigvec):
    """fb.resnet.torch transforms.lua `Lighting`, transcribed (img is HWC here)."""
    rgb = (eigvec * alpha.reshape(1, 3) * eigval.reshape(1, 3)).sum(axis=1)
    out = img.copy()
    for i in range(3):
        out[..., i] += rgb[i]
    return out


def test_pca_lighting_equals_fb_resnet_torch_lighting_for_fixed_alpha():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=(2, 4, 5, 3)).astype("float32")
    alpha = np.array([[0.1, -0.2, 0.05], [-0.15, 0.03, 0.2]], "float32")
    y = np_(augment.PCALighting().transform(x, {"alpha": alpha}))
    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    )
    for i in range(2):
        ref = reference_lighting(x[i].astype("float64"), alpha[i], eigval, eigvec)
        np.testing.assert_allclose(y[i], ref, atol=1e-6)
    # uint8 images: the [0, 1] eigenvalues are scaled by 255, then rounded and clipped.
    x8 = (x * 255).astype("uint8")
    y8 = np_(augment.PCALighting().transform(x8, {"alpha": alpha}))
    ref8 = [
        reference_lighting(x8[i].astype("float64"), alpha[i] * 255, eigval, eigvec)
        for i in range(2)
    ]
    np.testing.assert_array_equal(y8, np.clip(np.round(ref8), 0, 255).astype("uint8"))


def test_pca_lighting_alpha_is_normal_with_alphastd():
    n = 20000
    alpha = np_(
        augment.PCALighting(alphastd=0.1, seed=0).get_random_transformation((n, 1, 1, 3))["alpha"]
    )
    assert stats.kstest(alpha.ravel() / 0.1, "norm").pvalue > P_MIN


# ---------------------------------------------------------------------------------------------
# Normalize
def test_normalize_standardises_uint8_and_float_and_ignores_training_flag():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)
    x = np.random.default_rng(0).integers(0, 256, size=(2, 3, 3, 3)).astype("uint8")
    layer = augment.Normalize(mean=mean, std=std)
    expected = (x / 255.0 - np.array(mean)) / np.array(std)
    for training in (True, False):
        np.testing.assert_allclose(np_(layer(x, training=training)), expected, atol=1e-5)
    y16 = layer((x / 255.0).astype("float16"))
    assert keras.backend.standardize_dtype(y16.dtype) == "float16"
    np.testing.assert_allclose(np_(y16), expected, atol=1e-2)
    np.testing.assert_allclose(np_(layer(x[0])), expected[0], atol=1e-5)  # one unbatched image
    scalar = augment.Normalize(mean=0.5, std=0.25)  # one mean/std for every channel
    np.testing.assert_allclose(np_(scalar(x)), (x / 255.0 - 0.5) / 0.25, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# MixUp / CutMix
def constant_images(n, h=6, w=5):
    """Image i is the constant i + 1 with one-hot label i: any mix is readable from pixels."""
    values = np.arange(1, n + 1, dtype="float32")
    return np.broadcast_to(values[:, None, None, None], (n, h, w, 3)).copy(), values


def test_mixup_lambda_follows_beta_alpha_alpha_and_partner_is_a_permutation():
    n, alpha = 5000, 0.4
    t = augment.MixUp(alpha=alpha, seed=0).get_random_transformation((n, 1, 1, 1))
    assert stats.kstest(np_(t["lam"]), "beta", args=(alpha, alpha)).pvalue > P_MIN
    assert sorted(np_(t["partner"]).tolist()) == list(range(n))


def test_mixup_mixes_labels_with_exactly_the_image_weights():
    n = 64
    x, values = constant_images(n)
    labels = np.eye(n, dtype="float32")
    mx, my = augment.MixUp(alpha=0.4, seed=1)((x, labels), training=True)
    mx, my = np_(mx), np_(my)
    # The pixel value of every mixed image equals its label-weighted class value.
    np.testing.assert_allclose(mx[:, 0, 0, 0], my @ values, rtol=1e-6)
    np.testing.assert_allclose(my.sum(axis=1), 1.0, rtol=1e-6)
    assert np.mean(my.max(axis=1) < 1.0) > 0.5  # actually mixed


def test_mixup_one_hots_integer_labels_with_num_classes():
    x, values = constant_images(8)
    mx, my = augment.MixUp(alpha=1.0, num_classes=8, seed=2)((x, np.arange(8)), training=True)
    np.testing.assert_allclose(np_(mx)[:, 0, 0, 0], np_(my) @ values, rtol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        augment.MixUp(alpha=1.0)((x, np.arange(8)), training=True)


def test_cutmix_label_weights_equal_the_exact_pasted_area():
    n, h, w = 64, 12, 10
    x, values = constant_images(n, h, w)
    labels = np.eye(n, dtype="float32")
    out = augment.CutMix(alpha=1.0, seed=3)(
        {"images": x, "labels": labels, "id": np.arange(n)}, training=True
    )
    mx, my = np_(out["images"]), np_(out["labels"])
    np.testing.assert_array_equal(np_(out["id"]), np.arange(n))  # other keys pass through
    for i in range(n):
        kept = (mx[i, ..., 0] == values[i]).mean()
        pasted_from = set(np.unique(mx[i, ..., 0]).tolist()) - {values[i]}
        assert my[i, i] == pytest.approx(kept, abs=1e-6) or (my[i, i] == 1.0 and not pasted_from)
        for v in pasted_from:
            assert my[i, int(v) - 1] == pytest.approx((mx[i, ..., 0] == v).mean(), abs=1e-6)
    np.testing.assert_allclose(mx.mean(axis=(1, 2, 3)), my @ values, rtol=1e-5)
    assert np.mean(my.max(axis=1) < 1.0) > 0.5


def test_cutmix_pastes_every_channel_of_the_partner_box_exactly():
    # NumPy transcription of the paste on images whose channels all differ, so a mask that
    # mixed up channels (e.g. on a flattened W * C view) would show.
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(16, 9, 7, 3)).astype("uint8")
    labels = np.eye(16, dtype="float32")
    t = twin_transformation(augment.CutMix, x.shape, alpha=1.0, seed=6)
    mx, _ = augment.CutMix(alpha=1.0, seed=6)((x, labels), training=True)
    expected = x.copy()
    for b, ((y0, x0, y1, x1), partner) in enumerate(zip(np_(t["boxes"]), np_(t["partner"]))):
        expected[b, y0:y1, x0:x1] = x[partner, y0:y1, x0:x1]
    np.testing.assert_array_equal(np_(mx), expected)
    assert (np_(mx) != x).any()


@pytest.mark.parametrize("layer_cls", [augment.CutMix, augment.RandomPadCrop])
def test_masked_layers_give_the_same_result_with_unknown_channels(layer_cls):
    # Without a static channel count the select broadcasts a (B, H, W, 1) mask instead of
    # using the flat (B, H, W * C) view; both must agree exactly.
    x = np.random.default_rng(6).integers(0, 256, size=(8, 9, 7, 3)).astype("uint8")
    kwargs = {"padding": 3, "fill_mode": "constant", "fill_value": 17}
    kwargs = {"alpha": 1.0} if layer_cls is augment.CutMix else kwargs
    labels = np.eye(8, dtype="float32")

    def run(layer, images):
        if layer_cls is augment.CutMix:
            return layer((images, labels), training=True)[0]
        return layer(images, training=True)

    twins = layer_cls(seed=2, **kwargs), layer_cls(seed=2, **kwargs)
    dynamic = tf.function(
        lambda images: run(twins[0], images),
        input_signature=[tf.TensorSpec((8, 9, 7, None), tf.uint8)],
    )
    static = tf.function(lambda images: run(twins[1], images))
    np.testing.assert_array_equal(np_(dynamic(x)), np_(static(x)))


def test_cutmix_box_side_is_sqrt_one_minus_lambda_of_the_image():
    # Yun et al.'s rand_bbox: cut = int(side * sqrt(1 - lam)), box [c - cut//2, c + cut//2)
    # clipped to the image; lam ~ Beta(alpha, alpha); weight = 1 - box area / image area.
    n, side, alpha = 20000, 200, 1.0
    t = augment.CutMix(alpha=alpha, seed=4).get_random_transformation((n, side, side, 3))
    lam = np_(t["lam"])
    y0, x0, y1, x1 = np_(t["boxes"]).T
    assert stats.kstest(lam.astype("float64"), "beta", args=(alpha, alpha)).pvalue > P_MIN
    # In float32 like the layer, so that floor() agrees at the boundaries.
    cut = np.floor(np.sqrt(np.float32(1.0) - lam) * np.float32(side)).astype(int)
    inside = (y0 > 0) & (y1 < side) & (x0 > 0) & (x1 < side)
    assert inside.mean() > 0.1
    np.testing.assert_array_equal((y1 - y0)[inside], 2 * (cut[inside] // 2))
    np.testing.assert_array_equal((x1 - x0)[inside], 2 * (cut[inside] // 2))
    assert np.all((y1 - y0) <= 2 * (cut // 2)) and (y0.min() >= 0) and (y1.max() <= side)
    np.testing.assert_allclose(np_(t["weight"]), 1 - (y1 - y0) * (x1 - x0) / side**2, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Shared behaviour
@pytest.mark.parametrize(
    "layer",
    [layer for layer in all_layers() if not isinstance(layer, augment.RandomResizedCrop)],
    ids=lambda layer: type(layer).__name__,
)
def test_identity_when_training_is_false(layer):
    x = np.random.default_rng(0).integers(0, 256, size=(4, 12, 10, 3)).astype("uint8")
    np.testing.assert_array_equal(np_(layer(x, training=False)), x)


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16"])
@pytest.mark.parametrize("layer", all_layers(), ids=lambda layer: type(layer).__name__)
def test_output_keeps_the_input_dtype(layer, dtype):
    x = np.random.default_rng(0).integers(0, 256, size=(4, 12, 10, 3)).astype(dtype)
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == dtype


@pytest.mark.parametrize("index", range(8))
def test_same_seed_reproduces_and_other_seed_differs(index):
    x = np.random.default_rng(0).uniform(0, 255, size=(8, 12, 10, 3)).astype("float32")
    first, second, other = all_layers()[index], all_layers()[index], all_layers()[index]
    other.seed_generator = keras.random.SeedGenerator(1234)
    a, b, c = (np_(layer(x, training=True)) for layer in (first, second, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Successive batches of one layer are different draws.
    assert not np.array_equal(a, np_(first(x, training=True)))


def test_tuples_and_dicts_pass_labels_through_unchanged():
    x = np.zeros((4, 8, 8, 3), "uint8")
    labels = np.arange(4)
    images, out_labels = augment.RandomPadCrop(seed=0)((x, labels), training=True)
    np.testing.assert_array_equal(np_(out_labels), labels)
    out = augment.Cutout(size=2, seed=0)({"images": x, "labels": labels}, training=True)
    np.testing.assert_array_equal(np_(out["labels"]), labels)
    assert images.shape == x.shape


def test_single_unbatched_image_is_accepted():
    x = np.ones((8, 8, 3), "float32")
    assert augment.Cutout(size=2, seed=0)(x, training=True).shape == (8, 8, 3)


def test_works_in_tf_data_and_under_xla_in_a_model():
    x = np.random.default_rng(0).integers(0, 256, size=(16, 12, 12, 3)).astype("uint8")
    flip = augment.RandomFlip(seed=0)
    ds = tf.data.Dataset.from_tensors(x).repeat(2).map(flip)
    batches = [b.numpy() for b in ds]
    for b in batches:
        assert np.all((b == x).all(axis=(1, 2, 3)) | (b == x[:, :, ::-1]).all(axis=(1, 2, 3)))
    assert not np.array_equal(batches[0], batches[1])

    inputs = keras.Input((12, 12, 3), dtype="uint8")
    h = augment.RandomPadCrop(padding=2, seed=1)(inputs)
    h = augment.RandomFlip(seed=2)(h)
    h = augment.Cutout(size=4, seed=3)(h)
    h = augment.ColorJitter(seed=4)(h)
    h = augment.PCALighting(seed=5)(h)
    h = augment.Normalize()(h)
    model = keras.Model(inputs, h)
    compiled = tf.function(lambda a: model(a, training=True), jit_compile=True)
    y = compiled(x).numpy()
    assert y.shape == (16, 12, 12, 3) and np.isfinite(y).all()
    np.testing.assert_allclose(model.predict(x, verbose=0), np_(augment.Normalize()(x)), rtol=1e-6)


def test_model_save_and_load_round_trip(tmp_path):
    inputs = keras.Input((16, 16, 3))
    h = inputs
    layers = all_layers()[:6] + [augment.Normalize(mean=(0.1, 0.2, 0.3), std=(1, 2, 3))]
    for layer in layers:
        h = layer(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for original, restored in zip(model.layers, loaded.layers):
        assert type(original) is type(restored)
        assert original.get_config() == restored.get_config()
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    mixers = [augment.MixUp(alpha=0.3, num_classes=5, seed=1), augment.CutMix(alpha=0.7, seed=2)]
    for layer in mixers:
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: augment.RandomPadCrop(padding=-1), "padding"),
        (lambda: augment.RandomPadCrop(fill_mode="wrap"), "fill_mode"),
        (lambda: augment.RandomFlip(mode="diagonal"), "mode"),
        (lambda: augment.RandomFlip(rate=1.5), "rate"),
        (lambda: augment.Cutout(size=0), "size"),
        (lambda: augment.RandomResizedCrop(0, 10), "height"),
        (lambda: augment.RandomResizedCrop(10, 10, scale=(0.5, 0.1)), "scale"),
        (lambda: augment.RandomResizedCrop(10, 10, ratio=(0.0, 1.0)), "ratio"),
        (lambda: augment.RandomResizedCrop(10, 10, interpolation="cubic"), "interpolation"),
        (lambda: augment.ColorJitter(brightness=-0.1), "brightness"),
        (lambda: augment.ColorJitter(hue=2.0), "hue"),
        (lambda: augment.PCALighting(alphastd=-1), "alphastd"),
        (lambda: augment.PCALighting(eigval=(1, 2)), "eigval"),
        (lambda: augment.Normalize(std=(0.0, 1.0, 1.0)), "std"),
        (lambda: augment.MixUp(alpha=0.0), "alpha"),
        (lambda: augment.CutMix(num_classes=1), "num_classes"),
        (lambda: augment.Cutout(seed="x"), "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_bad_argument_message_has_keras_style_with_the_received_value():
    with pytest.raises(ValueError) as error:
        augment.RandomPadCrop(padding=-1)
    assert str(error.value) == "`padding` must be an integer >= 0. Received: padding=-1"
    # bool is not a number here, NaN is never one.
    with pytest.raises(ValueError, match="Received: rate=True"):
        augment.RandomFlip(rate=True)
    with pytest.raises(ValueError, match="Received: fill_value=nan"):
        augment.Cutout(fill_value=float("nan"))


@pytest.mark.parametrize(
    "make, wrong, right",
    [
        (lambda: augment.RandomPadCrop(mode="constant"), "mode", "fill_mode"),
        (lambda: augment.Cutout(sise=4), "sise", "size"),
        (lambda: augment.MixUp(alhpa=0.2), "alhpa", "alpha"),
        (lambda: augment.Normalize(means=(0.5,)), "means", "mean"),
    ],
)
def test_wrong_keyword_names_the_closest_right_one(make, wrong, right):
    with pytest.raises(ValueError, match=f"`{wrong}` \\(did you mean `{right}`\\?\\)"):
        make()


def test_only_label_mixing_layers_carry_the_public_marker():
    marked = {type(layer).__name__ for layer in all_layers() if layer.mixes_labels}
    assert marked == {"MixUp", "CutMix"}
    assert augment.Normalize().mixes_labels is False


def test_normalize_has_no_seed_and_loads_configs_that_had_one():
    layer = augment.Normalize(mean=(0.5,), std=(0.25,))
    assert not hasattr(layer, "seed_generator") and "seed" not in layer.get_config()
    old_config = dict(layer.get_config(), seed=3)  # accepted (and ignored) since 0.1.0
    restored = augment.Normalize.from_config(old_config)
    assert restored.get_config() == layer.get_config()


def test_every_public_name_is_importable_from_the_package_and_its_family_module():
    from keras_tricks.augment import color, erasing, geometric, mixing

    families = {
        geometric: ["RandomPadCrop", "RandomFlip", "RandomResizedCrop"],
        erasing: ["Cutout"],
        color: [
            "ColorJitter",
            "PCALighting",
            "Normalize",
            "IMAGENET_MEAN",
            "IMAGENET_STD",
            "IMAGENET_EIGVAL",
            "IMAGENET_EIGVEC",
        ],
        mixing: ["MixUp", "CutMix"],
    }
    names = [name for members in families.values() for name in members]
    assert sorted(names) == sorted(augment.__all__)
    for module, members in families.items():
        for name in members:
            assert getattr(augment, name) is getattr(module, name)


def test_reflect_padding_larger_than_image_raises():
    with pytest.raises(ValueError, match="padding"):
        augment.RandomPadCrop(padding=8)(np.zeros((1, 8, 8, 1), "float32"), training=True)


@pytest.mark.slow
def test_layers_train_inside_a_compiled_model_on_the_jax_backend(run_python):
    script = textwrap.dedent(
        """
        import numpy as np, keras
        from keras_tricks import augment
        assert keras.backend.backend() == "jax"
        x = np.random.default_rng(0).integers(0, 256, size=(16, 12, 12, 3)).astype("uint8")
        y = np.arange(16) % 2
        for layer in [augment.RandomPadCrop(2, seed=1), augment.RandomFlip(seed=2),
                      augment.Cutout(4, seed=3), augment.RandomResizedCrop(10, 10, seed=4),
                      augment.ColorJitter(seed=5), augment.PCALighting(seed=6),
                      augment.MixUp(0.4, seed=7), augment.CutMix(1.0, seed=8)]:
            out = layer(x, training=True)
            assert keras.backend.standardize_dtype(out.dtype) == "uint8", layer
        inputs = keras.Input((12, 12, 3), dtype="uint8")
        h = augment.RandomPadCrop(2, seed=1)(inputs)
        h = augment.RandomFlip(seed=2)(h)
        h = augment.Cutout(4, seed=3)(h)
        h = augment.RandomResizedCrop(10, 10, seed=4)(h)
        h = augment.ColorJitter(seed=5)(h)
        h = augment.PCALighting(seed=6)(h)
        h = augment.Normalize()(h)
        outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
        model = keras.Model(inputs, outputs)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        print("OK")
        """
    )
    assert "OK" in run_python(script, backend="jax")


# ---------------------------------------------------------------------------------------------
# keras_tricks.plotting (the augmentation grid helper)
def test_augmentation_grid_puts_originals_then_augmented_copies_in_columns(tmp_path):
    from PIL import Image

    from keras_tricks import plotting

    x = np.random.default_rng(0).integers(0, 256, size=(2, 6, 5)).astype("uint8")
    grid = plotting.augmentation_grid(x, augment.RandomFlip(rate=1.0), num_augmentations=3)
    assert grid.shape == (2, 4, 6, 5, 1)
    np.testing.assert_array_equal(grid[:, 0, ..., 0], x)
    for column in range(1, 4):
        np.testing.assert_array_equal(grid[:, column, ..., 0], x[:, :, ::-1])
    path = plotting.save_augmentation_grid(x, augment.Cutout(2), tmp_path / "grid.png", 3)
    # figsize (1.2 * columns, 1.2 * rows) inches at 100 dpi.
    assert Image.open(path).size == (480, 240)
    with pytest.raises(ValueError, match="num_augmentations"):
        plotting.augmentation_grid(x, augment.RandomFlip(), num_augmentations=0)


def test_fashion_mnist_grid_writes_the_docs_figure(tmp_path, fashion_mnist_dir):
    from PIL import Image

    from keras_tricks import plotting

    path = plotting.fashion_mnist_grid(
        tmp_path / "fmnist.png", num_images=2, num_augmentations=3, data_dir=fashion_mnist_dir
    )
    width, height = Image.open(path).size
    assert width == 480 and height == round(100 * (1.2 * 4 + 0.6))
