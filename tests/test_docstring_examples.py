"""Every ```python block of the packages' docstrings and of README.md runs, so examples cannot rot.

One harness for both. It walks the source of `keras_tricks` and `tfrecord_tools` (every module,
public or not) and collects the ```python blocks of each module, class, function and method
docstring, then the ```python blocks of README.md, and runs each in a fresh namespace. So a
block marked ```python is a promise that it runs as shown: a formula to read goes in a plain
``` block, a shell command in ```bash.

How the blocks are run, as close to a user's paste as a shared test machine allows:
- `/tmp/...` paths are redirected to a directory of the test session (the machine's /tmp is
  shared); the Fashion-MNIST shards that several `tfrecord_tools` examples read from
  `/tmp/fmnist` are converted there once, as the package docstring's example does.
- A few README blocks are written for a full-size run or a bucket of their own; `ADAPTATIONS`
  runs them smaller (fewer images, epochs or source records) or on a local directory instead
  of `gs://` (TF's file system treats both alike; `tests/test_tfrecord_gcs.py` tests `gs://`
  against an emulator), by exact text replacements that must all apply, then checks what the
  block promises.
- `NOT_RUNNABLE` lists blocks that are formulas or pseudo-code in a ```python fence: expected
  to fail with a SyntaxError or NameError (any other error fails the test) until their fences
  become plain ``` and they leave the harness.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keras_tricks", "tfrecord_tools")
README = ROOT / "README.md"

_DOC_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Headings (## and ###) name the section of each README block.
_README_PART = re.compile(r"^(#{2,3}) ([^\n]+)$|^```python\n(.*?)^```", re.S | re.M)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstring_examples(path: Path) -> list[tuple[str, str]]:
    """(id, code) for each ```python block of the file's docstrings, in source order."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def walk(node, prefix):
        doc = ast.get_docstring(node) if not isinstance(node, ast.AsyncFunctionDef) else None
        for i, match in enumerate(_DOC_FENCE.finditer(doc or "")):
            yield f"{module}:{prefix or '<module>'}[{i}]", match.group(1)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef)):
                yield from walk(child, f"{prefix}.{child.name}" if prefix else child.name)

    return list(walk(tree, ""))


def _readme_examples() -> list[tuple[str, str]]:
    """(id, code) for each ```python block of README.md: `README.md:<section>[i]`."""
    examples, section, count = [], "<top>", 0
    for match in _README_PART.finditer(README.read_text(encoding="utf-8")):
        if match.group(2) is not None:
            section, count = match.group(2).strip(), 0
        else:
            examples.append((f"README.md:{section}[{count}]", match.group(3)))
            count += 1
    return examples


# Placeholders in adaptations, filled in when the block runs.
SUBSET = "<FASHION_MNIST_SUBSET>"  # a directory of IDX files: 1,000 train, 200 test images


@dataclass(frozen=True)
class Adaptation:
    """How the harness runs one block: exact replacements (each must match), checks after it."""

    replace: tuple[tuple[str, str], ...] = ()
    check: str = ""
    slow: bool = False
    needs_fashion_mnist: bool = False

    def apply(self, name: str, code: str) -> str:
        for old, new in self.replace:
            assert old in code, f"{name}: the harness replaces {old!r}, which the block lost"
            code = code.replace(old, new)
        return code + "\n" + self.check


ADAPTATIONS = {
    # 10 epochs of ResNet-9 on 60,000 images take ~26 min here: the same code on 512 images for
    # one epoch. 512 / 128 = 4 steps, all of them warmup, which ends exactly at the decay's
    # step-0 value: the Goyal-scaled peak 0.1 * 128 / 256 = 0.05 times linear-cosine's
    # (alpha + 1) * 1 + beta = 1.001 (TF's defaults alpha=0, beta=0.001).
    "README.md:Using it from `model.fit`[0]": Adaptation(
        replace=(
            (
                "batch_size, epochs = 512, 10",
                "batch_size, epochs = 128, 1\n"
                "x_train, y_train = x_train[:512], y_train[:512]\n"
                "x_test, y_test = x_test[:256], y_test[:256]",
            ),
        ),
        check=(
            "import numpy as np\n"
            "h = model.history.history\n"
            "assert np.isfinite(h['loss']).all() and 'val_accuracy' in h\n"
            "assert abs(h['learning_rate'][-1] - 0.05 * 1.001) < 1e-6, h['learning_rate']\n"
        ),
        slow=True,
        needs_fashion_mnist=True,
    ),
    # Runs as written (3,000 images, "about a minute").
    "README.md:Training techniques[0]": Adaptation(
        check=(
            "import os\n"
            "assert os.path.exists('tta_savedmodel/saved_model.pb')\n"
            "assert os.path.exists('mean_teacher.keras')\n"
            "assert probs.shape == (1000, 10)\n"
            "assert isinstance(keras.models.load_model('mean_teacher.keras'), MeanTeacher)\n"
        ),
        slow=True,
        needs_fashion_mnist=True,
    ),
    # The whole of Fashion-MNIST (~7 s to convert), into a local directory instead of a bucket.
    "README.md:tfrecord_tools: datasets to sharded TFRecords, on disk or `gs://`[0]": Adaptation(
        replace=(("gs://my-bucket/fmnist", "fmnist"),),
        check=(
            "assert manifest['splits']['train']['num_records'] == 60000\n"
            "images, labels = next(iter(pipe.dataset))\n"
            "assert images.shape[0] == 512 and labels.shape[0] == 512\n"
        ),
        slow=True,
        needs_fashion_mnist=True,
    ),
    # Apache Beam's DirectRunner takes ~65 s for the 70,000 images here: the same call on the
    # 1,200-image subset.
    "README.md:At scale: Apache Beam / Dataflow[0]": Adaptation(
        replace=(("idx:/usr/share/datasets/fashion-mnist", f"idx:{SUBSET}"),),
        check=(
            "import tfrecord_tools\n"
            "assert tfrecord_tools.verify('/tmp/fmnist_beam').ok\n"
            "manifest = tfrecord_tools.read_manifest('/tmp/fmnist_beam')\n"
            "assert manifest['splits']['train']['num_records'] == 1000\n"
        ),
        needs_fashion_mnist=True,
    ),
    "tfrecord_tools.beam:<module>[0]": Adaptation(
        replace=(("idx:/usr/share/datasets/fashion-mnist", f"idx:{SUBSET}"),),
        needs_fashion_mnist=True,
    ),
}

# Formulas or pseudo-code in ```python fences (of modules with other owners, to be changed
# there): each fails to run, with a SyntaxError or NameError, until its fence becomes ```.
NOT_RUNNABLE: set[str] = set()


def _all_examples() -> list[tuple[str, str]]:
    examples = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            examples.extend(_docstring_examples(path))
    return examples + _readme_examples()


EXAMPLES = _all_examples()


def _params():
    for name, code in EXAMPLES:
        adaptation = ADAPTATIONS.get(name, Adaptation())
        marks = [pytest.mark.slow] if adaptation.slow else []
        if name in NOT_RUNNABLE:
            reason = "a formula or pseudo-code in a ```python fence: should be a plain ```"
            marks.append(pytest.mark.xfail(reason=reason, raises=(SyntaxError, NameError)))
        yield pytest.param(name, adaptation.apply(name, code), adaptation, id=name, marks=marks)


def test_the_harness_finds_the_examples():
    ids = [name for name, _ in EXAMPLES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    for expected in [
        "keras_tricks.augment.geometric:RandomPadCrop[0]",
        "keras_tricks.callbacks:LinearWarmup[0]",
        "keras_tricks.ema:ExponentialMovingAverage[0]",
        "keras_tricks.training.stability:StabilityTraining[0]",
        "keras_tricks.training.mean_teacher:TwoStreamBatches[0]",
        "README.md:Training techniques[0]",
        "README.md:CPU defaults[0]",
    ]:
        assert expected in ids, expected
    # Every adaptation still names a block (a renamed README section would silently skip it).
    assert set(ADAPTATIONS) <= set(ids)


@pytest.fixture
def isolated_globals(tmp_path, monkeypatch):
    """Undo what an example may change globally: the Keras dtype policy, environment variables;
    files it writes (a plot, TensorBoard logs, a SavedModel) land in a temporary directory."""
    monkeypatch.chdir(tmp_path)
    policy, environ = keras.config.dtype_policy(), dict(os.environ)
    yield
    keras.config.set_dtype_policy(policy)
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture(scope="session")
def example_tmp(tmp_path_factory):
    """What the examples' `/tmp` means here: one directory per test session (and worker)."""
    return tmp_path_factory.mktemp("example_tmp")


@pytest.fixture(scope="session")
def fmnist_shards(example_tmp, fashion_mnist_dir):
    """`/tmp/fmnist` as `tfrecord_tools`'s package example leaves it (~4 s; examples that
    convert into it again resume in well under a second)."""
    import tfrecord_tools

    output = example_tmp / "fmnist"
    tfrecord_tools.convert(
        f"idx:{fashion_mnist_dir}", str(output), num_shards=8, num_workers=2, name="fashion_mnist"
    )
    return output


@pytest.fixture(scope="session")
def fashion_mnist_subset(tmp_path_factory, fashion_mnist_dir):
    """The first 1,000 training and 200 test images of Fashion-MNIST, as gzipped IDX files."""
    import gzip
    import struct

    from keras_tricks.datasets import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(fashion_mnist_dir)
    directory = tmp_path_factory.mktemp("fashion_mnist_subset")
    for stem, array in [
        ("train-images-idx3-ubyte", x_train[:1000]),
        ("train-labels-idx1-ubyte", y_train[:1000]),
        ("t10k-images-idx3-ubyte", x_test[:200]),
        ("t10k-labels-idx1-ubyte", y_test[:200]),
    ]:
        # IDX: two zero bytes, type 0x08 (unsigned byte), rank, then each dimension big-endian.
        header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
            f">{array.ndim}I", *array.shape
        )
        with gzip.open(directory / f"{stem}.gz", "wb") as f:
            f.write(header + array.astype("uint8").tobytes())
    return directory


@pytest.mark.parametrize("name, code, adaptation", list(_params()))
def test_example_runs(name, code, adaptation, isolated_globals, request):
    if adaptation.needs_fashion_mnist:
        request.getfixturevalue("fashion_mnist_dir")
    if SUBSET in code:
        code = code.replace(SUBSET, str(request.getfixturevalue("fashion_mnist_subset")))
    for quote in "\"'":
        if f"{quote}/tmp/" in code:
            tmp = request.getfixturevalue("example_tmp")
            code = code.replace(f"{quote}/tmp/", f"{quote}{tmp}/")
            if f"{tmp}/fmnist{quote}" in code:
                request.getfixturevalue("fmnist_shards")
    exec(compile(code, name, "exec"), {"__name__": "__docstring_example__"})
