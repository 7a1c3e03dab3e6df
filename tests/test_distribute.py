"""keras_tricks under `tf.distribute.MirroredStrategy` over two logical CPU devices.

The reference of every check is the same computation on one device: data-parallel SGD on a
global batch of B split into two replicas of B/2 is, up to float rounding, the same update as
one device on the B examples (Goyal et al. 2017, https://arxiv.org/abs/1706.02677, section 2),
provided every per-example loss is averaged over the *global* batch (Keras scales each
replica's mean by 1/num_replicas and sums the gradients) and BatchNormalization computes its
statistics over the global batch (`synchronized=True`; plain BatchNormalization normalises each
replica's share on its own, which is a different model, "ghost" batch norm).

Logical devices must be configured before TensorFlow initialises its devices, so each check
runs in a fresh process (the `run_python` fixture) and prints its results as JSON.
"""

import json
import textwrap

import numpy as np
import pytest

PRELUDE = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import numpy as np

    from keras_tricks import augment, callbacks, losses, lr_finder, optimizers, schedules

    STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert STRATEGY.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    Y = rng.integers(0, 3, 64)

    def small_model(optimizer_name, global_batch):
        keras.utils.set_random_seed(0)  # same initial weights in every run
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(synchronized=True),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ])
        # Linear scaling rule on the global batch: 0.1 at batch 8.
        lr = schedules.Warmup(
            schedules.scale_learning_rate(0.1, global_batch, base_batch_size=8), warmup_steps=3
        )
        if optimizer_name == "sgd":
            optimizer = keras.optimizers.SGD(lr, momentum=0.9)
        else:
            optimizer = optimizers.LARS(lr, momentum=0.9, weight_decay=1e-4, eta=0.01)
        model.compile(optimizer, losses.LabelSmoothingCrossEntropy(0.1), jit_compile=False)
        return model

    def numpy_list(variables):
        return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in variables]
    """
)

FIT_SCRIPT = PRELUDE + textwrap.dedent(
    """
    import contextlib
    OPTIMIZER, FIT_IN_SCOPE, GLOBAL_BATCH = {optimizer!r}, {fit_in_scope!r}, 16

    def scope(strategy):
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    def train(strategy):
        with scope(strategy):
            model = small_model(OPTIMIZER, GLOBAL_BATCH)
        ema = callbacks.ExponentialMovingAverage(decay=0.8)
        logger = callbacks.LearningRateLogger()
        with scope(strategy) if FIT_IN_SCOPE else contextlib.nullcontext():
            history = model.fit(
                X, Y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                validation_data=(X[:32], Y[:32]), callbacks=[ema, logger],
            )
        return {{
            "mirrored": type(model.weights[0].value).__name__,
            "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "learning_rates": logger.learning_rates,
            "loss": history.history["loss"],
            "val_loss": history.history["val_loss"],
            "weights": numpy_list(model.weights),
            "ema": numpy_list(ema.average_variables),
        }}

    print(json.dumps({{"one": train(None), "two": train(STRATEGY)}}))
    """
)


def _run(run_python, script):
    return json.loads(run_python(script, backend="tensorflow").strip().splitlines()[-1])


def _assert_all_close(got, want, rtol=1e-5, atol=1e-6):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(w), rtol=rtol, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer, fit_in_scope",
    [("sgd", False), ("sgd", True), ("lars", True)],
    ids=["sgd", "sgd-fit-in-scope", "lars-fit-in-scope"],
)
def test_fit_on_two_replicas_matches_one_device_on_the_global_batch(
    run_python, optimizer, fit_in_scope
):
    out = _run(run_python, FIT_SCRIPT.format(optimizer=optimizer, fit_in_scope=fit_in_scope))
    one, two = out["one"], out["two"]
    assert two["mirrored"] == "MirroredVariable" and one["mirrored"] != "MirroredVariable"

    # 64 examples / global batch 16 = 4 steps: the schedule steps on the global step.
    assert one["iterations"] == two["iterations"] == 4
    # Warmup over 3 steps to scale_learning_rate(0.1, 16, 8) = 0.1 * 16 / 8, then constant:
    # step s trains at (s + 1) / 3 * target for s < 3.
    target = 0.1 * 16 / 8
    want = [(s + 1) / 3 * target if s < 3 else target for s in range(4)]
    np.testing.assert_allclose(one["learning_rates"], want, rtol=1e-6)
    np.testing.assert_allclose(two["learning_rates"], want, rtol=1e-6)

    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    _assert_all_close(two["weights"], one["weights"])
    # Validation ran on the averaged weights: same averages, same validation loss.
    _assert_all_close(two["ema"], one["ema"])
    np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=1e-5)

    # Not vacuous: the averages lag the weights, and BatchNorm's moving statistics (weights
    # 3 and 4, initialised to 0 and 1) moved and are averaged too.
    assert (
        max(np.abs(np.array(a) - np.array(w)).max() for a, w in zip(two["ema"], two["weights"]))
        > 1e-3
    )
    assert np.abs(np.array(two["weights"][3])).max() > 1e-5
    assert np.abs(np.array(two["weights"][4]) - 1.0).max() > 1e-4
    assert len(two["ema"]) == len(two["weights"])


AUGMENT_SCRIPT = PRELUDE + textwrap.dedent(
    """
    layers = {
        "RandomPadCrop": lambda: augment.RandomPadCrop(padding=4, seed=1),
        "RandomFlip": lambda: augment.RandomFlip(seed=1),
        "Cutout": lambda: augment.Cutout(size=8, seed=1),
        "RandomResizedCrop": lambda: augment.RandomResizedCrop(16, 16, seed=1),
        "ColorJitter": lambda: augment.ColorJitter(seed=1),
        "PCALighting": lambda: augment.PCALighting(seed=1),
        "MixUp": lambda: augment.MixUp(alpha=1.0, num_classes=10, seed=1),
        "CutMix": lambda: augment.CutMix(alpha=1.0, num_classes=10, seed=1),
    }
    images = rng.uniform(size=(16, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, 16).astype("int32")
    # Both replicas get the same 16 images: any difference comes from their random draws.
    same = STRATEGY.experimental_distribute_values_from_function(lambda ctx: (images, labels))
    result = {}
    for name, make in layers.items():
        with STRATEGY.scope():
            layer = make()

        @tf.function
        def step(batch, layer=layer, name=name):
            if name in ("MixUp", "CutMix"):
                return layer(batch, training=True)[0]
            return layer(batch[0], training=True)

        per_replica = STRATEGY.run(step, args=(same,))
        first, second = [v.numpy() for v in STRATEGY.experimental_local_results(per_replica)]
        result[name] = {
            "differ": bool(np.abs(first - second).max() > 1e-6),
            "changed": bool(np.abs(first - images).max() > 1e-6),
            "flip_ok": bool(all(
                np.array_equal(o, i) or np.array_equal(o, i[:, ::-1])
                for half in (first, second) for o, i in zip(half, images)
            )),
        }
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_augmentation_draws_independently_on_each_replica(run_python):
    out = _run(run_python, AUGMENT_SCRIPT)
    assert len(out) == 8
    for name, got in out.items():
        # Each replica augmented its (identical) input...
        assert got["changed"], name
        # ...with its own draws: the chance that 16 images get the same draws on both
        # replicas is at most 2**-16 (RandomFlip, one bit per image); a shared seed state
        # would make the two outputs equal bit for bit.
        assert got["differ"], name
    assert out["RandomFlip"]["flip_ok"]


FIND_LR_SCRIPT = PRELUDE + textwrap.dedent(
    """
    def snapshot(model):
        return numpy_list(model.weights) + numpy_list(model.optimizer.variables)

    def sweep(model):
        return lr_finder.find_lr(
            model, (X, Y), min_lr=1e-3, max_lr=1.0, num_steps=6, batch_size=16,
            stop_on_divergence=False,
        )

    one = small_model("sgd", 16)
    one.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    reference = sweep(one)

    with STRATEGY.scope():
        model = small_model("sgd", 16)
        model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        before = snapshot(model)
        inside = sweep(model)
        after_inside = snapshot(model)
    outside = sweep(model)  # a model built in the scope, the sweep called outside it
    after_outside = snapshot(model)
    print(json.dumps({
        "reference": reference.losses.tolist(),
        "inside": inside.losses.tolist(), "outside": outside.losses.tolist(),
        "lrs": inside.learning_rates.tolist(),
        "restored_inside": before == after_inside, "restored_outside": before == after_outside,
        "mirrored": type(model.weights[0].value).__name__,
    }))
    """
)


@pytest.mark.slow
def test_find_lr_in_a_strategy_scope_restores_weights_exactly(run_python):
    out = _run(run_python, FIND_LR_SCRIPT)
    assert out["mirrored"] == "MirroredVariable"
    # Every weight, BN statistic and optimizer variable bit for bit as before each sweep.
    assert out["restored_inside"] and out["restored_outside"]
    # Exponential sweep: lr_i = 1e-3 * (1.0 / 1e-3) ** (i / 5).
    np.testing.assert_allclose(out["lrs"], [1e-3 * 1e3 ** (i / 5) for i in range(6)], rtol=1e-6)
    # Same losses as the sweep on one device from the same weights (the weights restored
    # after the first sweep, so the second gives the same losses again).
    np.testing.assert_allclose(out["inside"], out["reference"], rtol=1e-4)
    np.testing.assert_allclose(out["outside"], out["reference"], rtol=1e-4)


STABILITY_SCRIPT = PRELUDE + textwrap.dedent(
    """
    from keras_tricks.training import StabilityTraining

    SIGMA, SEED = 0.5, 3

    def wrapped(noise_stddev=SIGMA, alpha=1.0):
        keras.utils.set_random_seed(0)  # same initial weights in every run
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(3)])
        return StabilityTraining(net, noise_stddev=noise_stddev, alpha=alpha, seed=SEED)

    x = X[:16]
    # Both replicas get the same 16 images: any difference comes from their noise draws.
    with STRATEGY.scope():
        model = wrapped()
    same = STRATEGY.experimental_distribute_values_from_function(lambda ctx: x)
    per_replica = STRATEGY.run(tf.function(model.noise), args=(same,))
    replicas = [v.numpy() for v in STRATEGY.experimental_local_results(per_replica)]

    # One device: the draw of a plain SeedGenerator with the same seed.
    one_device = wrapped().noise(tf.constant(x)).numpy()
    plain = keras.random.normal(x.shape, stddev=SIGMA, seed=keras.random.SeedGenerator(SEED))

    # Replica r: the normal draw from the state [SEED, 0] of a fresh generator with r folded in.
    def folded(r):
        seed = tf.random.experimental.stateless_fold_in(tf.constant([SEED, 0]), r)
        return tf.random.stateless_normal(x.shape, stddev=SIGMA, seed=seed).numpy()

    import contextlib

    def fit(strategy, noise_stddev):
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            model = wrapped(noise_stddev)
            model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
                from_logits=True), jit_compile=False)
        history = model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
        return {
            "weights": numpy_list(model.model.weights),
            "loss": history["loss"],
            "stability_loss": history["stability_loss"],
            "seed_state": numpy_list([model.seed_generator.state]),
        }

    def one_step(alpha=5.0):
        # One step on 16 images (8 per replica): the logged loss is the total at the weights
        # before the step, the task loss there (evaluate: no stability term) + alpha * the
        # logged stability term, if the term is scaled for the replicas as the task loss is.
        with STRATEGY.scope():
            model = wrapped(alpha=alpha)
            model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
                from_logits=True), jit_compile=False)
        task = model.evaluate(x, Y[:16], batch_size=16, verbose=0, return_dict=True)["loss"]
        history = model.fit(x, Y[:16], batch_size=16, epochs=1, verbose=0).history
        return {"task": task, "loss": history["loss"][0], "alpha": alpha,
                "stability_loss": history["stability_loss"][0]}

    print(json.dumps({
        "replicas": [r.tolist() for r in replicas],
        "folded": [folded(r).tolist() for r in range(2)],
        "one_device": one_device.tolist(),
        "plain": np.asarray(plain).tolist(),
        "fit_one_quiet": fit(None, 0.0),
        "fit_two_quiet": fit(STRATEGY, 0.0),
        "fit_one": fit(None, SIGMA),
        "fit_two": fit(STRATEGY, SIGMA),
        "one_step": one_step(),
    }))
    """
)


@pytest.mark.slow
def test_stability_training_noise_is_drawn_independently_on_each_replica(run_python):
    out = _run(run_python, STABILITY_SCRIPT)
    first, second = (np.array(r) for r in out["replicas"])
    # Each replica's noise is its own: with a shared seed state the two would be equal.
    assert np.abs(first - second).max() > 0.1
    # Each is the N(0, sigma^2) draw of the seed with the replica id folded in...
    np.testing.assert_array_equal(first, np.array(out["folded"][0]))
    np.testing.assert_array_equal(second, np.array(out["folded"][1]))
    for noise in (first, second):  # ...so still Gaussian with the given stddev (n = 1024)
        assert abs(noise.std() - 0.5) < 0.05 and abs(noise.mean()) < 0.05
    # On one device nothing changes: the draws of a plain SeedGenerator with the same seed.
    np.testing.assert_array_equal(np.array(out["one_device"]), np.array(out["plain"]))

    # Without noise the stability term is KL(f(x) || f(x)) = 0 with zero gradient, so two
    # replicas on a global batch of 16 train exactly as one device (up to float rounding).
    one, two = out["fit_one_quiet"], out["fit_two_quiet"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    _assert_all_close(two["weights"], one["weights"])
    assert max(one["stability_loss"] + two["stability_loss"]) < 1e-6
    # With noise: one draw per step on every replica, the generator advances as on one device
    # (4 steps: state [seed, 4]) and the stability term is positive on both.
    one, two = out["fit_one"], out["fit_two"]
    assert one["seed_state"] == two["seed_state"] == [[3, 4]]
    assert min(one["stability_loss"] + two["stability_loss"]) > 0
    assert np.isfinite(two["loss"]).all()
    # The stability term weighs as on one device: loss = task + alpha * stability (with a term
    # left unscaled for the 2 replicas it would be task + 2 * alpha * stability).
    step = out["one_step"]
    assert step["alpha"] * step["stability_loss"] > 0.01
    np.testing.assert_allclose(
        step["loss"], step["task"] + step["alpha"] * step["stability_loss"], rtol=1e-5
    )


MEAN_TEACHER_SCRIPT = PRELUDE + textwrap.dedent(
    """
    import contextlib
    from keras_tricks.training import MeanTeacher

    Y_SEMI = Y.copy()
    Y_SEMI[::2] = -1  # half the images unlabelled

    def fit(strategy):
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            keras.utils.set_random_seed(0)  # same initial weights in every run
            net = keras.Sequential([
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, use_bias=False),
                keras.layers.BatchNormalization(synchronized=True),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ])
            model = MeanTeacher(net, ema_decay=0.9, consistency_weight=10.0, rampup_steps=2)
            model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
                from_logits=True), jit_compile=False)
        history = model.fit(X, Y_SEMI, batch_size=16, epochs=1, shuffle=False, verbose=0)
        return {
            "mirrored": type(model.teacher.weights[0].value).__name__,
            "loss": history.history["loss"],
            "consistency_loss": history.history["consistency_loss"],
            "student": numpy_list(model.student.weights),
            "teacher": numpy_list(model.teacher.weights),
            "updates": int(keras.ops.convert_to_numpy(model.teacher_updates)),
        }

    from keras_tricks.training import HintonDistiller

    def distill(strategy):
        def net(seed):
            keras.utils.set_random_seed(seed)
            return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                     keras.layers.Dense(3)])

        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            distiller = HintonDistiller(net(0), net(1), temperature=4.0)
            distiller.compile(keras.optimizers.SGD(0.1), jit_compile=False)
        history = distiller.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        return {"loss": history.history["loss"], "student": numpy_list(distiller.student.weights)}

    print(json.dumps({
        "one": fit(None), "two": fit(STRATEGY),
        "distill_one": distill(None), "distill_two": distill(STRATEGY),
    }))
    """
)


@pytest.mark.slow
def test_mean_teacher_and_distiller_on_two_replicas_match_one_device(run_python):
    out = _run(run_python, MEAN_TEACHER_SCRIPT)
    # HintonDistiller: Keras's Distiller and KLDivergence scale for the replicas themselves.
    np.testing.assert_allclose(out["distill_two"]["loss"], out["distill_one"]["loss"], rtol=1e-5)
    _assert_all_close(out["distill_two"]["student"], out["distill_one"]["student"])
    one, two = out["one"], out["two"]
    assert two["mirrored"] == "MirroredVariable"
    # 64 images / 16 = 4 steps, one teacher update after each, on every replica alike.
    assert one["updates"] == two["updates"] == 4
    # The consistency term is scaled for the replicas like the class cost, and the teacher's
    # EMA of mirrored variables (BN statistics included) is the same update on both copies.
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["consistency_loss"], one["consistency_loss"], rtol=1e-5)
    _assert_all_close(two["student"], one["student"])
    _assert_all_close(two["teacher"], one["teacher"])
    # Not vacuous: the consistency term is there, and the teacher lags the student.
    assert one["consistency_loss"][0] > 0
    assert (
        max(np.abs(np.array(s) - np.array(t)).max() for s, t in zip(one["student"], one["teacher"]))
        > 1e-3
    )
