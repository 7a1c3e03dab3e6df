"""Stability training: make a classifier's output insensitive to small input noise."""

from typing import Any

import keras
from keras import ops

from keras_tricks._checks import check_bool, check_keywords, check_number, check_seed
from keras_tricks.augment._base import PerReplicaSeedGenerator
from keras_tricks.training._common import (
    check_classifier,
    check_logits,
    check_model,
    kl_divergence,
    log_probabilities,
    scale_for_replicas,
)


@keras.saving.register_keras_serializable(package="keras_tricks")
class StabilityTraining(keras.Model):
    """Train a classifier with the stability loss of Zheng et al. against Gaussian input noise.

    Zheng, Song, Leung & Goodfellow, "Improving the Robustness of Deep Neural Networks via
    Stability Training", CVPR 2016, https://arxiv.org/abs/1604.04326. Each training step draws
    the noise on the device, in the same step, and adds the divergence between the predictions
    on the clean and the perturbed copy of the batch to the compiled task loss:

    ```
    eps = keras.random.normal(x.shape, stddev=noise_stddev, seed=seed_generator)
    p, q = softmax(model(x)), softmax(model(x + eps))      # both in training mode
    stability = mean(sum(p * (log(p) - log(q)), axis=-1))  # KL(f(x) || f(x + eps))
    loss = task_loss(y, model(x)) + alpha * stability
    ```

    The paper writes the classification stability term as the cross-entropy
    `-sum(p * log(q))`; the KL divergence used here is that minus the entropy of `p`, so a
    perfectly stable model scores 0 and the clean prediction is not also pushed towards
    confidence. Gradients flow through both copies, as in the paper's weight-shared Siamese
    network. The noise is added to the model's input, so `noise_stddev` is in input units
    (0.04 on [0, 1] pixels, the paper's scale); feed float images. Calling, evaluating and
    predicting run `model` alone, on the input as given; `stability_loss` is logged. Under a
    `tf.distribute` strategy each replica draws its own noise (the replica id is folded into
    the seed, as in the augmentation layers); on one device the draws are those of a
    `keras.random.SeedGenerator(seed)`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tricks.training import StabilityTraining

    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model = StabilityTraining(net, noise_stddev=0.04, alpha=0.01, seed=0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x = np.random.rand(64, 28, 28, 1).astype("float32")    # [0, 1] pixels
    model.fit(x, np.random.randint(0, 10, 64), epochs=1, verbose=0)
    ```

    Args:
        model: The classifier, returning (batch, classes) logits (or probabilities, see
            `from_logits`).
        noise_stddev: Standard deviation `sigma` of the Gaussian input noise, >= 0.
        alpha: Weight of the stability term, >= 0.
        from_logits: Whether `model` returns logits (True) or probabilities.
        seed: Seed of the noise's seed generator (None: random).
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        model: keras.Model,
        noise_stddev: float = 0.04,
        alpha: float = 0.01,
        from_logits: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        check_keywords(type(self), kwargs)  # first: a misspelt name leaves its default in place
        check_model("model", model)
        check_classifier("model", model)
        noise_stddev = check_number("noise_stddev", noise_stddev, non_negative=True)
        alpha = check_number("alpha", alpha, non_negative=True)
        from_logits = check_bool("from_logits", from_logits)
        seed = check_seed("seed", seed)
        super().__init__(**kwargs)
        self.model = model
        self.noise_stddev = noise_stddev
        self.alpha = alpha
        self.from_logits = from_logits
        self.seed = seed
        # Under tf.distribute each replica folds its id into the seed, so the replicas' shares of
        # the global batch get independent noise (a plain SeedGenerator would give every
        # replica the same draws); on one device the draws are a plain SeedGenerator's.
        self.seed_generator = PerReplicaSeedGenerator(seed, name="stability_noise_seed")
        self.stability_loss_tracker = keras.metrics.Mean(name="stability_loss")

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.model(inputs, training=training)

    def noise(self, x: Any) -> Any:
        """One draw of the input noise, shaped like `x`, from the model's seed generator."""
        return keras.random.normal(
            ops.shape(x), stddev=self.noise_stddev, dtype=x.dtype, seed=self.seed_generator
        )

    def stability_loss(self, y_clean: Any, y_noisy: Any) -> Any:
        """Mean over the batch of KL(f(x) || f(x + eps)), from the two outputs."""
        log_p = log_probabilities(y_clean, self.from_logits)
        log_q = log_probabilities(y_noisy, self.from_logits)
        return ops.mean(kl_divergence(log_p, log_q))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if y_pred is None:
            y_pred = self(x, training=training)
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if not training:
            return loss
        check_logits("model", y_pred, self.model)
        x = ops.convert_to_tensor(x)
        if "float" not in str(x.dtype):
            x = ops.cast(x, "float32")
        y_noisy = self.model(x + self.noise(x), training=True)
        stability = self.stability_loss(y_pred, y_noisy)
        self.stability_loss_tracker.update_state(stability)
        return loss + scale_for_replicas(ops.cast(self.alpha, stability.dtype) * stability)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "noise_stddev": self.noise_stddev,
            "alpha": self.alpha,
            "from_logits": self.from_logits,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "StabilityTraining":
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)
