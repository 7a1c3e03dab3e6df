"""ResNet v1 with the ResNet-B/C/D tweaks and zero-γ initialisation.

He et al. 2019, "Bag of Tricks for Image Classification with Convolutional Neural Networks",
https://arxiv.org/abs/1812.01187, Section 4 (model tweaks) and Section 3.1 (zero γ).

Built from plain Keras layers with the functional API (channels-last), so it runs on every Keras
backend and its variables carry Keras's own names (`kernel`, `bias`, `gamma`, `beta`): weight-decay
exclusion by name (`no_bias_decay`, LARS) finds the biases and batch-norm parameters.
Layer names follow `keras.applications.ResNet50` (`conv2_block1_1_conv`, `conv2_block1_out`, ...).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_tricks._checks import check_bool, check_int, check_one_of, fail, suggest_keywords
from keras_tricks.models._common import check_input_shape

# depth -> (block kind, blocks per stage); He et al. 2015, Table 1.
_ARCH = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_VARIANTS = ("a", "b", "c", "d")
_EXPANSION = {"basic": 1, "bottleneck": 4}
# PyTorch's BatchNorm2d defaults (momentum 0.1 in torch's convention = 0.9 in Keras's), the
# values torchvision and timm train ResNets with; Keras's own default epsilon is 1e-3.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _initializers(kernel_initializer):
    """(conv, dense) kernel initializers for the `kernel_initializer` argument."""
    if kernel_initializer == "kaiming":
        # torchvision's ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs,
        # torch's nn.Linear default U(±1/sqrt(fan_in)) = VarianceScaling(1/3, fan_in, uniform).
        return (
            keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
            keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        )
    if kernel_initializer == "xavier":
        # The Bag-of-Tricks baseline (Section 2.1): Xavier uniform for conv and dense layers.
        return keras.initializers.GlorotUniform(), keras.initializers.GlorotUniform()
    init = keras.initializers.get(kernel_initializer)
    return init, init


def _conv(x, filters, kernel_size, strides, name, init):
    if strides > 1 and kernel_size > 1:
        # Symmetric padding as in PyTorch (padding=k//2); "same" would pad only bottom/right for
        # stride 2 on even sizes, shifting every feature map by half a pixel.
        x = layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=init,
        name=name + "_conv",
    )(x)


def _bn(x, name, zero=False):
    return layers.BatchNormalization(
        axis=-1,
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        gamma_initializer="zeros" if zero else "ones",
        name=name + "_bn",
    )(x)


def _shortcut(x, filters, strides, variant, name, init):
    if strides == 1 and x.shape[-1] == filters:
        return x
    if variant == "d" and strides > 1:
        # ResNet-D: average pooling does the downsampling so the 1x1 conv sees every input
        # position instead of skipping three quarters of them. ceil_mode/count_include_pad=False
        # in timm = "same" padding here (TF's average pool ignores padded cells).
        x = layers.AveragePooling2D(
            strides, strides=strides, padding="same", name=name + "_0_pool"
        )(x)
        strides = 1
    x = _conv(x, filters, 1, strides, name + "_0", init)
    return _bn(x, name + "_0")


def _basic_block(x, filters, strides, variant, zero_gamma, name, init):
    shortcut = _shortcut(x, filters, strides, variant, name, init)
    y = _conv(x, filters, 3, strides, name + "_1", init)
    y = _bn(y, name + "_1")
    y = layers.Activation("relu", name=name + "_1_relu")(y)
    y = _conv(y, filters, 3, 1, name + "_2", init)
    y = _bn(y, name + "_2", zero=zero_gamma)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.Activation("relu", name=name + "_out")(y)


def _bottleneck_block(x, filters, strides, variant, zero_gamma, name, init):
    shortcut = _shortcut(x, filters * 4, strides, variant, name, init)
    # ResNet-A strides the first 1x1 conv (which then ignores 3/4 of its input); ResNet-B and
    # later move the stride to the 3x3 conv.
    stride_1x1, stride_3x3 = (strides, 1) if variant == "a" else (1, strides)
    y = _conv(x, filters, 1, stride_1x1, name + "_1", init)
    y = _bn(y, name + "_1")
    y = layers.Activation("relu", name=name + "_1_relu")(y)
    y = _conv(y, filters, 3, stride_3x3, name + "_2", init)
    y = _bn(y, name + "_2")
    y = layers.Activation("relu", name=name + "_2_relu")(y)
    y = _conv(y, filters * 4, 1, 1, name + "_3", init)
    y = _bn(y, name + "_3", zero=zero_gamma)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.Activation("relu", name=name + "_out")(y)


def _stem(x, variant, init):
    if variant in ("a", "b"):
        x = _conv(x, 64, 7, 2, "conv1", init)
        x = _bn(x, "conv1")
        x = layers.Activation("relu", name="conv1_relu")(x)
    else:
        # ResNet-C: three 3x3 convs (32, 32, 64 channels) replace the 7x7, as in the paper's
        # Figure 2b and timm's `deep_stem`.
        for i, (filters, strides) in enumerate(((32, 2), (32, 1), (64, 1)), start=1):
            x = _conv(x, filters, 3, strides, f"conv1_{i}", init)
            x = _bn(x, f"conv1_{i}")
            x = layers.Activation("relu", name=f"conv1_{i}_relu")(x)
    # Zero padding equals PyTorch's -inf padding here because the input is post-ReLU (>= 0).
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


@suggest_keywords
def resnet_v1(
    depth: int = 50,
    variant: str = "d",
    num_classes: int = 1000,
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    zero_gamma: bool = True,
    kernel_initializer: Any = "kaiming",
    include_top: bool = True,
    classifier_activation: Any = None,
    name: str | None = None,
) -> keras.Model:
    """ResNet v1 (He et al. 2015) with the Bag-of-Tricks tweaks B, C and D and zero-γ init.

    Paper: He et al. 2019, https://arxiv.org/abs/1812.01187 (Section 4, Figure 2; Section 3.1).

    ```
    variant "a": original ResNet; a downsampling bottleneck strides its first 1x1 conv.
    variant "b": the stride moves to the 3x3 conv (torchvision's `resnet50`).
    variant "c": "b" + stem of three 3x3 convs (32, 32, 64 channels, first with stride 2).
    variant "d": "c" + shortcut downsampling = AvgPool(2x2, stride 2) -> 1x1 conv (stride 1)
                 -> BN (timm's `resnet50d`).
    zero_gamma:  the last BN of every residual block starts with γ = 0, so each block starts as
                 out = relu(shortcut(x)).
    ```
    Depths 18 and 34 use basic blocks (two 3x3 convs), where "a" and "b" coincide; 50, 101 and
    152 use bottleneck blocks. Convolutions have no bias (the BN that follows has β). Batch norm
    uses PyTorch's momentum/epsilon (0.9 in Keras's convention, 1e-5). The classifier outputs
    logits by default and runs in float32 under mixed precision.

    Example:

    ```python
    import keras
    from keras_tricks.models import resnet_v1

    model = resnet_v1(18, "d", num_classes=10, input_shape=(32, 32, 3))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```

    Args:
        depth: 18, 34, 50, 101 or 152.
        variant: "a", "b", "c" or "d".
        num_classes: number of output logits.
        input_shape: (height, width, channels), channels-last; height and width at least 32 or
            None.
        zero_gamma: initialise γ = 0 in the last batch norm of every residual block.
        kernel_initializer: "kaiming" (torchvision's: He normal with fan_out for convs, torch's
            default uniform for the classifier), "xavier" (Glorot uniform, the paper's baseline)
            or any Keras initializer.
        include_top: add global average pooling and the classifier; if False, the model outputs
            the last feature map.
        classifier_activation: activation of the classifier (None = logits).
        name: model name; default `resnet{depth}{variant}`, e.g. "resnet50d".

    Returns:
        A `keras.Model`.
    """
    depth = check_one_of("depth", depth, sorted(_ARCH))
    variant = check_one_of("variant", variant, list(_VARIANTS))
    check_int("num_classes", num_classes, minimum=1)
    input_shape = check_input_shape(input_shape, 32)
    check_bool("zero_gamma", zero_gamma)
    check_bool("include_top", include_top)
    if not (
        kernel_initializer in ("kaiming", "xavier")
        or not isinstance(kernel_initializer, str)
        or _is_keras_initializer_name(kernel_initializer)
    ):
        fail(
            "kernel_initializer",
            "'kaiming', 'xavier' or a Keras initializer",
            kernel_initializer,
        )
    conv_init, dense_init = _initializers(kernel_initializer)
    kind, blocks = _ARCH[depth]
    block_fn = _basic_block if kind == "basic" else _bottleneck_block

    inputs = keras.Input(shape=input_shape, name="image")
    x = _stem(inputs, variant, conv_init)
    for stage, num_blocks in enumerate(blocks):
        filters = 64 * 2**stage
        for block in range(num_blocks):
            strides = 2 if (block == 0 and stage > 0) else 1
            x = block_fn(
                x,
                filters,
                strides,
                variant,
                zero_gamma,
                f"conv{stage + 2}_block{block + 1}",
                conv_init,
            )
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # float32 logits keep softmax/cross-entropy accurate under mixed precision.
        x = layers.Dense(
            num_classes,
            activation=classifier_activation,
            kernel_initializer=dense_init,
            dtype="float32",
            name="predictions",
        )(x)
    return keras.Model(inputs, x, name=name or f"resnet{depth}{variant}")


def _is_keras_initializer_name(identifier):
    try:
        keras.initializers.get(identifier)
    except ValueError:
        return False
    return True
