"""Tests for keras_tricks.models: ResNet v1 a/b/c/d with zero-γ, and Page's ResNet-9."""

import math

import keras
import numpy as np
import pytest

from keras_tricks.models import CELU, resnet9, resnet_v1


def _trainable_count(model):
    return sum(math.prod(v.shape) for v in model.trainable_variables)


def _non_trainable_count(model):
    return sum(math.prod(v.shape) for v in model.non_trainable_variables)


@pytest.fixture
def restore_dtype_policy():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


# ---------------------------------------------------------------------------------------------
# ResNet v1: parameter counts against published figures
# ---------------------------------------------------------------------------------------------

# torchvision.models.resnetXX(weights=None): sum(p.numel() for p in model.parameters()), as
# listed in torchvision's model documentation ("num_params" in the weights' meta data). torchvision
# ResNets are ResNet-B (stride on the 3x3, "ResNet v1.5"). `parameters()` holds conv weights, BN
# weight/bias and fc weight/bias -- the Keras *trainable* variables (kernels, gamma/beta, dense
# kernel/bias). torch's BN running_mean/running_var are buffers, not parameters; in Keras they
# are the non-trainable moving_mean/moving_variance, so they are compared separately below.
TORCHVISION_PARAMS = {
    18: 11_689_512,
    34: 21_797_672,
    50: 25_557_032,
    101: 44_549_160,
    152: 60_192_808,
}


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_resnet_v1_b_trainable_params_equal_torchvision(depth):
    model = resnet_v1(depth, "b", num_classes=1000, input_shape=(224, 224, 3))
    assert _trainable_count(model) == TORCHVISION_PARAMS[depth]
    # Every BN layer has as many moving statistics (mean, variance) as trainable (gamma, beta).
    bn_trainable = sum(
        math.prod(v.shape)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.trainable_variables
    )
    assert _non_trainable_count(model) == bn_trainable


def test_resnet50_variants_param_counts_equal_torchvision_and_timm():
    # timm `resnet50d` (deep stem + avg-pool shortcut): 25,576,264 parameters (timm's model card
    # "Params (M): 25.6"; exact figure from sum(p.numel() for p in timm.create_model(
    # "resnet50d").parameters())). By hand it is torchvision resnet50 minus the 7x7 stem
    # (conv 7*7*3*64 = 9,408 + BN 2*64 = 128) plus the deep stem (3*3*3*32 = 864, 3*3*32*32 =
    # 9,216, 3*3*32*64 = 18,432, BN 2*(32+32+64) = 256): 25,557,032 - 9,536 + 28,768.
    timm_resnet50d = 25_576_264
    assert timm_resnet50d == 25_557_032 - (9_408 + 128) + (864 + 9_216 + 18_432 + 256)
    # "a" only moves a stride (no parameters); "c" adds the deep stem; "d"'s pooling has none.
    expected = {"a": 25_557_032, "b": 25_557_032, "c": timm_resnet50d, "d": timm_resnet50d}
    for variant, count in expected.items():
        model = resnet_v1(50, variant, input_shape=(64, 64, 3))
        assert _trainable_count(model) == count, variant


# ---------------------------------------------------------------------------------------------
# ResNet v1: zero-gamma
# ---------------------------------------------------------------------------------------------


def _block_prefixes(model):
    return [layer.name[: -len("_out")] for layer in model.layers if layer.name.endswith("_out")]


def _block_probe(model):
    """Model returning, for every residual block, its shortcut output and its block output."""
    outputs = []
    prefixes = _block_prefixes(model)
    for prefix in prefixes:
        block_input = model.get_layer(prefix + "_add").input[0]  # the shortcut branch
        outputs += [block_input, model.get_layer(prefix + "_out").output]
    return prefixes, keras.Model(model.input, outputs)


@pytest.mark.parametrize("depth, variant", [(18, "d"), (50, "a"), (50, "d")])
def test_zero_gamma_makes_every_block_relu_of_its_shortcut_at_init(depth, variant):
    model = resnet_v1(depth, variant, num_classes=10, input_shape=(32, 32, 3))
    prefixes, probe = _block_probe(model)
    assert len(prefixes) == {18: 8, 50: 16}[depth]
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    for training in (False, True):
        outs = [np.asarray(o) for o in probe(x, training=training)]
        for i, prefix in enumerate(prefixes):
            shortcut, out = outs[2 * i], outs[2 * i + 1]
            # The residual branch ends in BN with gamma = 0, beta = 0: it adds exactly zero.
            np.testing.assert_array_equal(out, np.maximum(shortcut, 0.0), err_msg=prefix)
    last_bn = "_2_bn" if depth == 18 else "_3_bn"
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma = np.asarray(layer.gamma)
            in_block = "_block" in layer.name  # the stem's conv1_2_bn is not a block's last BN
            zero = in_block and layer.name.endswith(last_bn)
            np.testing.assert_array_equal(gamma, 0.0 if zero else 1.0, err_msg=layer.name)


def test_without_zero_gamma_blocks_are_not_identity():
    # The control for the test above: with gamma = 1 the residual branch contributes.
    model = resnet_v1(18, "d", num_classes=10, input_shape=(32, 32, 3), zero_gamma=False)
    prefixes, probe = _block_probe(model)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    outs = [np.asarray(o) for o in probe(x, training=False)]
    for i, prefix in enumerate(prefixes):
        diff = np.abs(outs[2 * i + 1] - np.maximum(outs[2 * i], 0.0)).max()
        assert diff > 1e-3, prefix


# ---------------------------------------------------------------------------------------------
# ResNet v1: stem and shortcut structure of each variant (He et al. 2019, Figure 2)
# ---------------------------------------------------------------------------------------------


def _conv(model, name):
    layer = model.get_layer(name)
    assert isinstance(layer, keras.layers.Conv2D), name
    return layer.kernel_size, layer.strides, layer.filters


def _layer_names(model):
    return {layer.name for layer in model.layers}


@pytest.mark.parametrize("variant", ["a", "b", "c", "d"])
def test_resnet50_stem_and_downsampling_structure_per_variant(variant):
    model = resnet_v1(50, variant, input_shape=(224, 224, 3), include_top=False)
    names = _layer_names(model)
    assert model.output.shape == (None, 7, 7, 2048)
    # Stem: 7x7/2 conv (a, b) or 3x3/2, 3x3, 3x3 convs with 32, 32, 64 channels (c, d).
    if variant in ("a", "b"):
        assert _conv(model, "conv1_conv") == ((7, 7), (2, 2), 64)
        assert "conv1_1_conv" not in names
    else:
        assert "conv1_conv" not in names
        assert _conv(model, "conv1_1_conv") == ((3, 3), (2, 2), 32)
        assert _conv(model, "conv1_2_conv") == ((3, 3), (1, 1), 32)
        assert _conv(model, "conv1_3_conv") == ((3, 3), (1, 1), 64)
    assert model.get_layer("pool1_pool").output.shape == (None, 56, 56, 64)
    for stage in (3, 4, 5):
        block = f"conv{stage}_block1"
        # Path A: "a" strides the first 1x1; "b", "c", "d" stride the 3x3.
        if variant == "a":
            assert _conv(model, block + "_1_conv")[:2] == ((1, 1), (2, 2))
            assert _conv(model, block + "_2_conv")[:2] == ((3, 3), (1, 1))
        else:
            assert _conv(model, block + "_1_conv")[:2] == ((1, 1), (1, 1))
            assert _conv(model, block + "_2_conv")[:2] == ((3, 3), (2, 2))
        # Path B: 1x1/2 conv (a, b, c) or 2x2/2 average pool then 1x1/1 conv (d).
        block_input = model.get_layer(f"conv{stage - 1}_block1_out").output
        if variant == "d":
            pool = model.get_layer(block + "_0_pool")
            assert isinstance(pool, keras.layers.AveragePooling2D)
            assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
            assert _conv(model, block + "_0_conv")[:2] == ((1, 1), (1, 1))
            assert model.get_layer(block + "_0_conv").input is pool.output
        else:
            assert _conv(model, block + "_0_conv")[:2] == ((1, 1), (2, 2))
        # Either way the shortcut starts from the previous stage's output (same shape).
        first = model.get_layer(block + "_0_pool" if variant == "d" else block + "_0_conv")
        assert first.input.shape == block_input.shape
    # The first stage does not downsample: a 1x1/1 projection (64 -> 256), never a pool.
    assert _conv(model, "conv2_block1_0_conv") == ((1, 1), (1, 1), 256)
    n_pools = sum(isinstance(layer, keras.layers.AveragePooling2D) for layer in model.layers)
    assert n_pools == (3 if variant == "d" else 0)


def test_resnet50_a_computes_the_same_function_as_keras_applications_resnet50():
    # Independent reference: keras.applications.ResNet50 is ResNet v1 with the stride on the
    # first 1x1 (variant "a") and the same layer names, but its convs have biases (set to 0
    # here) and its BN epsilon is 1.001e-5 (ours 1e-5, a 1e-9 relative difference).
    reference = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
    )
    model = resnet_v1(50, "a", num_classes=10, input_shape=(64, 64, 3), zero_gamma=False)
    rng = np.random.default_rng(4)
    copied = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        ref = reference.get_layer(layer.name)
        values = [np.asarray(w) for w in layer.weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            # Non-trivial gamma/beta/moving statistics, the same in both models.
            c = values[0].shape[0]
            values = [
                rng.uniform(0.5, 1.5, c),
                rng.normal(0.0, 0.1, c),
                rng.normal(0.0, 0.1, c),
                rng.uniform(0.5, 1.5, c),
            ]
            layer.set_weights(values)
            ref.set_weights(values)
        elif isinstance(layer, keras.layers.Conv2D):
            ref.set_weights([values[0], np.zeros(ref.filters, "float32")])
        else:
            ref.set_weights(values)
        copied += 1
    assert copied == len([layer for layer in reference.layers if layer.weights])
    x = rng.standard_normal((2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(model(x, training=False)),
        np.asarray(reference(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_resnet18_basic_blocks_stride_the_first_3x3_for_a_and_b():
    for variant in ("a", "b"):
        model = resnet_v1(18, variant, input_shape=(64, 64, 3))
        assert _conv(model, "conv3_block1_1_conv") == ((3, 3), (2, 2), 128)
        assert _conv(model, "conv3_block1_2_conv") == ((3, 3), (1, 1), 128)
        assert _conv(model, "conv3_block1_0_conv") == ((1, 1), (2, 2), 128)
        # Basic blocks keep 64 channels in stage 2: identity shortcut, no projection.
        assert "conv2_block1_0_conv" not in _layer_names(model)


# ---------------------------------------------------------------------------------------------
# ResNet v1: initialisation and weight-decay exclusion by name
# ---------------------------------------------------------------------------------------------


def test_kernel_initializer_kaiming_and_xavier_have_the_formula_std():
    # conv5_block1_2_conv of ResNet-18: 3x3, 512 -> 512 (2.36M samples: std known to ~0.1%).
    k, c_in, c_out = 3, 512, 512
    kaiming = resnet_v1(18, "b", input_shape=(32, 32, 3), kernel_initializer="kaiming")
    w = np.asarray(kaiming.get_layer("conv5_block1_2_conv").kernel)
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out).
    np.testing.assert_allclose(w.std(), math.sqrt(2.0 / (k * k * c_out)), rtol=0.01)
    xavier = resnet_v1(18, "b", input_shape=(32, 32, 3), kernel_initializer="xavier")
    w = np.asarray(xavier.get_layer("conv5_block1_2_conv").kernel)
    # Glorot uniform: U(±sqrt(6 / (fan_in + fan_out))), std = limit / sqrt(3).
    limit = math.sqrt(6.0 / (k * k * c_in + k * k * c_out))
    assert np.abs(w).max() <= limit
    np.testing.assert_allclose(w.std(), limit / math.sqrt(3.0), rtol=0.01)


def test_bias_and_batchnorm_variables_are_found_by_name_for_weight_decay_exclusion():
    model = resnet_v1(18, "d", num_classes=10, input_shape=(32, 32, 3))
    assert {v.name for v in model.trainable_variables} == {"kernel", "bias", "gamma", "beta"}
    optimizer = keras.optimizers.SGD(0.1, weight_decay=1e-4)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    excluded = [v for v in model.trainable_variables if not optimizer._use_weight_decay(v)]
    n_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    # ResNet-18-D: stem 3 BN + 8 blocks * 2 BN + 3 projection shortcuts = 22 BN; + dense bias.
    assert n_bn == 3 + 8 * 2 + 3
    assert len(excluded) == 2 * n_bn + 1
    assert all(v.name != "kernel" for v in excluded)
    # The package's own helper (keras_tricks.optimizers.no_bias_decay) picks the same set.
    from keras_tricks.optimizers import no_bias_decay

    ours = no_bias_decay(keras.optimizers.SGD(0.1, weight_decay=1e-4))
    ours.build(model.trainable_variables)
    excluded_ours = [v for v in model.trainable_variables if not ours._use_weight_decay(v)]
    assert [v.path for v in excluded_ours] == [v.path for v in excluded]


# ---------------------------------------------------------------------------------------------
# ResNet-9
# ---------------------------------------------------------------------------------------------


def _resnet9_params_by_hand(w, num_classes, frozen_bn_scale=False):
    # 3x3 convs without bias: prep 3->w, layer1 w->2w, two residual 2w->2w, layer2 2w->4w,
    # layer3 4w->8w, two residual 8w->8w.
    convs = 9 * (
        3 * w + w * 2 * w + 2 * (2 * w) ** 2 + 2 * w * 4 * w + 4 * w * 8 * w + 2 * (8 * w) ** 2
    )
    bn_channels = w + 3 * 2 * w + 4 * w + 3 * 8 * w  # one BN after each of the 8 convs
    bn = bn_channels if frozen_bn_scale else 2 * bn_channels  # beta (+ gamma)
    linear = 8 * w * num_classes  # Page: nn.Linear(512, 10, bias=False)
    return convs + bn + linear


def test_resnet9_param_count_equals_hand_computed_architecture():
    # w = 64: convs 9*(192 + 8,192 + 32,768 + 32,768 + 131,072 + 524,288) = 6,563,520;
    # BN 2*(64 + 384 + 256 + 1,536) = 4,480; linear 512*10 = 5,120; total 6,573,120.
    assert _resnet9_params_by_hand(64, 10) == 6_573_120
    assert _trainable_count(resnet9()) == 6_573_120
    assert _trainable_count(resnet9(num_classes=100, width=16)) == _resnet9_params_by_hand(16, 100)
    frozen = resnet9(frozen_bn_scale=True)
    assert _trainable_count(frozen) == _resnet9_params_by_hand(64, 10, frozen_bn_scale=True)
    assert "gamma" not in {v.name for v in frozen.variables}
    assert resnet9().output.shape == (None, 10)


def test_resnet9_logits_are_eighth_of_linear_on_global_max_pool():
    model = resnet9(num_classes=10, width=8)
    probe = keras.Model(model.input, [model.get_layer("layer3_add").output, model.output])
    x = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype("float32")
    features, logits = (np.asarray(t) for t in probe(x))
    kernel = np.asarray(model.get_layer("linear").kernel)
    expected = 0.125 * features.max(axis=(1, 2)) @ kernel
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_resnet9_pool_before_bn_orders_conv_pool_bn_act():
    late = resnet9(width=8)
    early = resnet9(width=8, pool_before_bn=True)
    for stage, size in ((1, 16), (2, 8), (3, 4)):
        name = f"layer{stage}"
        # Default (Page's DAWNBench net): conv -> BN -> ReLU -> pool.
        assert late.get_layer(name + "_pool").input is late.get_layer(name + "_relu").output
        assert late.get_layer(name + "_bn").output.shape[1] == 2 * size
        # Speed tweak: conv -> pool -> BN -> ReLU; BN and ReLU see 4x fewer pixels.
        assert early.get_layer(name + "_pool").input is early.get_layer(name + "_conv").output
        assert early.get_layer(name + "_bn").input is early.get_layer(name + "_pool").output
        assert early.get_layer(name + "_bn").output.shape[1] == size
        assert early.get_layer(name + "_relu").input is early.get_layer(name + "_bn").output


def test_celu_matches_its_formula_and_resnet9_uses_it():
    alpha = 0.3
    x = np.linspace(-3.0, 3.0, 61).astype("float32")
    expected = np.maximum(0.0, x) + np.minimum(0.0, alpha * (np.exp(x / alpha) - 1.0))
    np.testing.assert_allclose(np.asarray(CELU(alpha)(x)), expected, rtol=1e-6, atol=1e-7)
    model = resnet9(width=8, activation="celu", celu_alpha=alpha)
    celus = [layer for layer in model.layers if isinstance(layer, CELU)]
    assert len(celus) == 8 and all(layer.alpha == alpha for layer in celus)
    assert not any(isinstance(layer, keras.layers.Activation) for layer in model.layers)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 20}, "depth=20"),
        ({"variant": "e"}, "variant='e'"),
        ({"variant": "D"}, "variant='D'"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"input_shape": (16, 16, 3)}, r"channels-last.*input_shape=\(16, 16, 3\)"),
        ({"input_shape": (3, 224, 224)}, r"height.*input_shape=\(3, 224, 224\)"),
        ({"input_shape": (224, 224)}, r"input_shape=\(224, 224\)"),
        ({"input_shape": (224, 224, 0)}, "channels"),
        ({"input_shape": (224, 224, None)}, "channels"),
        ({"zero_gamma": "yes"}, "zero_gamma='yes'"),
        ({"kernel_initializer": "bogus"}, "kernel_initializer='bogus'"),
    ],
)
def test_resnet_v1_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet_v1(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width=0"),
        ({"activation": "gelu"}, "activation='gelu'"),
        ({"celu_alpha": -1.0}, "celu_alpha=-1.0"),
        ({"frozen_bn_scale": 1}, "frozen_bn_scale=1"),
        ({"pool_before_bn": None}, "pool_before_bn=None"),
        ({"input_shape": (4, 4, 3)}, r"input_shape=\(4, 4, 3\)"),
        ({"input_shape": (32, 32, 3, 1)}, r"input_shape=\(32, 32, 3, 1\)"),
        ({"num_classes": 2.5}, "num_classes=2.5"),
        ({"output_scale": "x"}, "output_scale='x'"),
    ],
)
def test_resnet9_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet9(**kwargs)


def test_celu_rejects_non_positive_alpha():
    with pytest.raises(ValueError, match="alpha=0"):
        CELU(alpha=0)


# ---------------------------------------------------------------------------------------------
# Saving and mixed-precision training
# ---------------------------------------------------------------------------------------------


def _small_models():
    return {
        "resnet18d": lambda: resnet_v1(18, "d", num_classes=10, input_shape=(32, 32, 3)),
        "resnet9": lambda: resnet9(
            width=8, activation="celu", frozen_bn_scale=True, pool_before_bn=True
        ),
    }


@pytest.mark.parametrize("name", ["resnet18d", "resnet9"])
def test_save_and_load_model_round_trip_gives_identical_predictions(name, tmp_path):
    model = _small_models()[name]()
    # Make BN statistics and gamma non-trivial so the round trip has something to lose.
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 32, 32, 3)).astype("float32")
    model.train_on_batch(x, np.arange(4))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert [layer.__class__ for layer in loaded.layers] == [
        layer.__class__ for layer in model.layers
    ]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", ["resnet18d", "resnet9"])
def test_trains_under_mixed_precision_with_float32_variables_and_logits(
    name, policy, restore_dtype_policy
):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)  # no float16 overflow-skipped step by bad luck
    model = _small_models()[name]()
    compute = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[policy]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == compute for layer in convs)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    if policy == "mixed_float16":  # Keras wraps the optimizer for loss scaling itself.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 8)
    before = np.asarray(convs[0].kernel).copy()
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(np.asarray(convs[0].kernel), before)
    assert model(x[:2]).dtype == "float32"


@pytest.mark.slow
def test_models_run_on_the_jax_backend(run_python):
    # Built from keras.layers/keras.ops only, so the same code runs on JAX. The ResNet-18 forward
    # pass must equal relu(shortcut) per block there too (zero-gamma), and ResNet-9 trains.
    code = (
        "import numpy as np, keras\n"
        "from keras_tricks.models import resnet9, resnet_v1\n"
        "assert keras.backend.backend() == 'jax'\n"
        "x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype('float32')\n"
        "m = resnet_v1(18, 'd', num_classes=10, input_shape=(32, 32, 3))\n"
        "probe = keras.Model(m.input, [m.get_layer('conv5_block2_add').input[0],\n"
        "                              m.get_layer('conv5_block2_out').output, m.output])\n"
        "shortcut, out, logits = (np.asarray(t) for t in probe(x))\n"
        "np.testing.assert_array_equal(out, np.maximum(shortcut, 0.0))\n"
        "assert logits.shape == (4, 10)\n"
        "m = resnet9(width=8, activation='celu', pool_before_bn=True)\n"
        "m.compile('sgd', keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
        "assert np.isfinite(m.train_on_batch(x, np.arange(4)))\n"
        "print('ok')\n"
    )
    assert run_python(code).strip().endswith("ok")
