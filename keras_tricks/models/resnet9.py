"""David Page's ResNet-9 for fast CIFAR-10 training, with his bag-of-tricks options."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_tricks._checks import (
    check_bool,
    check_int,
    check_keywords,
    check_number,
    check_one_of,
    suggest_keywords,
)
from keras_tricks.models._common import check_input_shape

_ACTIVATIONS = ("relu", "celu")


@keras.saving.register_keras_serializable(package="keras_tricks")
class CELU(layers.Layer):
    """Continuously differentiable ELU (Barron 2017, https://arxiv.org/abs/1704.07483).

    ```
    celu(x) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
    ```
    Page's bag-of-tricks ResNet-9 uses alpha = 0.3: a smoothed ReLU that helps at the end of
    training.

    Example:

    ```python
    import keras
    from keras_tricks.models import CELU

    y = CELU(alpha=0.3)(keras.ops.convert_to_tensor([-1.0, 0.0, 2.0]))
    ```

    Args:
        alpha: positive float, the scale of the negative part.
    """

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        check_keywords(type(self), kwargs)
        alpha = check_number("alpha", alpha, positive=True)
        super().__init__(**kwargs)
        self.alpha = alpha

    def call(self, inputs: Any) -> Any:
        return keras.ops.celu(inputs, alpha=self.alpha)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha}


def _conv_bn_act(
    x, filters, name, pool, activation, celu_alpha, frozen_bn_scale, pool_before_bn, init
):
    x = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer=init, name=name + "_conv"
    )(x)
    if pool and pool_before_bn:
        # Page's speed tweak: max-pool right after the conv, so BN and the activation run on a
        # quarter of the pixels.
        x = layers.MaxPooling2D(2, name=name + "_pool")(x)
    # frozen_bn_scale: γ is fixed at 1 (Keras `scale=False`), Page's `weight_freeze=True`.
    x = layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, scale=not frozen_bn_scale, name=name + "_bn"
    )(x)
    if activation == "celu":
        x = CELU(alpha=celu_alpha, name=name + "_celu")(x)
    else:
        x = layers.Activation("relu", name=name + "_relu")(x)
    if pool and not pool_before_bn:
        x = layers.MaxPooling2D(2, name=name + "_pool")(x)
    return x


@suggest_keywords
def resnet9(
    num_classes: int = 10,
    input_shape: tuple[int | None, int | None, int] = (32, 32, 3),
    width: int = 64,
    activation: str = "relu",
    celu_alpha: float = 0.3,
    frozen_bn_scale: bool = False,
    pool_before_bn: bool = False,
    output_scale: float = 0.125,
    name: str = "resnet9",
) -> keras.Model:
    """David Page's ResNet-9, the DAWNBench CIFAR-10 network (94% in 79 s on one V100).

    "How to train your ResNet" series, https://myrtle.ai/learn/how-to-train-your-resnet/ (part 4,
    "Architecture"; part 8, "Bag of tricks"); code: https://github.com/davidcpage/cifar10-fast.

    ```
    block(c)  = conv3x3(c, no bias) -> BN -> act                 (pool_before_bn=False)
    prep      = block(w)
    layer1    = block(2w) -> maxpool2;  x = x + block(2w)(block(2w)(x))
    layer2    = block(4w) -> maxpool2
    layer3    = block(8w) -> maxpool2;  x = x + block(8w)(block(8w)(x))
    head      = global max pool -> dense(num_classes, no bias) -> * output_scale (0.125)
    ```
    With `pool_before_bn=True` the pooling blocks run conv -> maxpool -> BN -> act (Page's
    bag-of-tricks speed-up). The convs and the classifier use PyTorch's default init
    (U(±1/sqrt(fan_in)), which Page trained with); BN uses PyTorch's momentum/epsilon.

    Example:

    ```python
    import keras
    from keras_tricks.models import resnet9

    model = resnet9(activation="celu", frozen_bn_scale=True, pool_before_bn=True)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ```

    Args:
        num_classes: number of output logits.
        input_shape: (height, width, channels), channels-last; height and width at least 8.
        width: channels of the prep layer; the layers have width × (1, 2, 4, 8).
        activation: "relu" or "celu".
        celu_alpha: alpha of CELU (Page: 0.3); used when activation="celu".
        frozen_bn_scale: fix every BN scale γ at 1 (not trained), as in Page's bag of tricks.
        pool_before_bn: conv -> pool -> BN -> act instead of conv -> BN -> act -> pool.
        output_scale: the logits multiplier (Page: 0.125).
        name: model name.

    Returns:
        A `keras.Model` whose outputs are float32 logits.
    """
    check_int("num_classes", num_classes, minimum=1)
    input_shape = check_input_shape(input_shape, 8)
    check_int("width", width, minimum=1)
    check_one_of("activation", activation, _ACTIVATIONS)
    check_number("celu_alpha", celu_alpha, positive=True)
    check_bool("frozen_bn_scale", frozen_bn_scale)
    check_bool("pool_before_bn", pool_before_bn)
    check_number("output_scale", output_scale, finite=True)

    # PyTorch's default conv/linear init, U(±1/sqrt(fan_in)).
    init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
    opts = dict(
        activation=activation,
        celu_alpha=celu_alpha,
        frozen_bn_scale=frozen_bn_scale,
        pool_before_bn=pool_before_bn,
        init=init,
    )

    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn_act(inputs, width, "prep", pool=False, **opts)
    for stage, (mult, residual) in enumerate(((2, True), (4, False), (8, True)), start=1):
        x = _conv_bn_act(x, width * mult, f"layer{stage}", pool=True, **opts)
        if residual:
            y = _conv_bn_act(x, width * mult, f"layer{stage}_res1", pool=False, **opts)
            y = _conv_bn_act(y, width * mult, f"layer{stage}_res2", pool=False, **opts)
            x = layers.Add(name=f"layer{stage}_add")([x, y])
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(
        num_classes, use_bias=False, kernel_initializer=init, dtype="float32", name="linear"
    )(x)
    # Keras's own Rescaling layer is the serialisable "multiply by a constant".
    x = layers.Rescaling(output_scale, dtype="float32", name="logits")(x)
    return keras.Model(inputs, x, name=name)
