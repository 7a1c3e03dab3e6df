"""The notebooks in examples/: committed clean, and executed end to end on small parameters.

Every notebook runs under papermill in a fresh IPython kernel of this interpreter (the project's
virtualenv; a kernelspec written into `tmp_path` and found through `JUPYTER_PATH`), with
parameters that make it take seconds, on data CI has: the Debian Fashion-MNIST files; generated
stand-ins of the true shapes for what it cannot have (CIFAR-10 python batches, an ImageNet-layout
folder of JPEGs); and, for `gs://`, TF's own GCS client pointed at fake-gcs-server by the
environment of `GCSEndpoint.tf_env()` (tests/gcs_emulator.py), which the kernel inherits — TF
reads those variables when the kernel imports it. The notebooks assert their own invariants
(EMA + TTA evaluation equals the recipe's, a reloaded model predicts as the trained one, flip TTA
is exactly mirror invariant); the checks here compare what they wrote with what was generated.
"""

import json
import os
import pickle
import re
import sys

import nbformat
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
REPOSITORY = "keras-tricks/keras-tricks"  # the GitHub org/repo the Colab badges open
NOTEBOOKS = [
    "quickstart_fashion_mnist.ipynb",
    "cifar10_fast.ipynb",
    "imagenet_resnet50_gcs.ipynb",
    "lr_range_test.ipynb",
    "training_techniques.ipynb",
]
ARXIV = re.compile(r"https?://arxiv\.org/abs/[^\s)\]]+")
NOTEBOOK_TIMEOUT = 600  # seconds per cell; a cell of these small runs takes well under a minute


def colab_url(name):
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/examples/{name}"


def read(name):
    return nbformat.read(os.path.join(EXAMPLES, name), as_version=nbformat.NO_CONVERT)


def cells_of(notebook, kind):
    return [cell for cell in notebook.cells if cell.cell_type == kind]


# --------------------------------------------------------------------------- the committed files
def test_examples_folder_holds_exactly_the_listed_notebooks():
    found = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".ipynb"))
    assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs_or_execution_counts(name):
    notebook = read(name)
    assert notebook.nbformat == 4
    nbformat.validate(notebook)
    for cell in cells_of(notebook, "code"):
        assert cell.outputs == [], f"{name}: a code cell has outputs: {cell.source[:60]!r}"
        assert cell.execution_count is None, f"{name}: execution count in {cell.source[:60]!r}"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata
    assert "papermill" not in notebook.metadata
    assert "widgets" not in notebook.metadata


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_colab_badge_install_and_parameters_cells(name):
    notebook = read(name)
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    assert (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name)})"
        in first.source
    )
    code = cells_of(notebook, "code")
    # The install cell comes first, guarded, so it is skipped wherever the package imports.
    assert 'importlib.util.find_spec("keras_tricks") is None' in code[0].source
    assert '"pip", "install"' in code[0].source
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    # Plain assignments only, so papermill's injected cell can override every one of them.
    lines = [line for line in tagged[0].source.splitlines() if line and not line.startswith("#")]
    assert parameter_names(name) and len(parameter_names(name)) == len(lines)
    markdown = "\n".join(c.source for c in cells_of(notebook, "markdown"))
    links = ARXIV.findall(markdown)
    assert links, f"{name}: no paper linked on arXiv"
    for link in links:
        assert re.fullmatch(r"https://arxiv\.org/abs/\d{4}\.\d{4,5}", link), link


def test_readme_lists_every_notebook_with_its_colab_badge():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for name in NOTEBOOKS:
        assert f"(examples/{name})" in readme, name
        assert f"({colab_url(name)})" in readme, name


def _install_cell():
    return cells_of(read(NOTEBOOKS[0]), "code")[0].source


def test_install_cell_does_nothing_when_keras_tricks_imports(monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(_install_cell(), {})
    assert calls == []


def test_install_cell_pip_installs_the_repository_when_keras_tricks_is_missing(monkeypatch):
    import importlib.util
    import subprocess

    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "keras_tricks" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append((cmd, k)))
    exec(_install_cell(), {})
    assert len(calls) == 1
    command, kwargs = calls[0]
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[-1] == f"keras-tricks[plot] @ git+https://github.com/{REPOSITORY}"
    assert kwargs == {"check": True}


# ------------------------------------------------------------------------------ executing them
@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec running this interpreter, so the notebooks see the project's virtualenv."""
    name = "keras-tricks-tests"
    spec_dir = tmp_path / "jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "keras-tricks tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return name


def parameter_names(name):
    """The names the notebook's `parameters` cell assigns."""
    (cell,) = [c for c in read(name).cells if "parameters" in c.metadata.get("tags", [])]
    return re.findall(r"^(\w+) = ", cell.source, flags=re.M)


def execute(name, kernel, workdir, **parameters):
    """Run `examples/name` with `parameters` in `workdir`; the executed notebook."""
    import papermill

    # papermill only warns about a name the notebook does not have, and the run would then
    # silently take the full-size default; a renamed parameter must fail here instead.
    unknown = set(parameters) - set(parameter_names(name))
    assert not unknown, f"{name} has no parameters {sorted(unknown)}"
    workdir.mkdir(exist_ok=True)
    output = workdir / f"executed-{name}"
    papermill.execute_notebook(
        os.path.join(EXAMPLES, name),
        str(output),
        parameters=parameters,
        kernel_name=kernel,
        cwd=str(workdir),
        progress_bar=False,
        execution_timeout=NOTEBOOK_TIMEOUT,
        start_timeout=120,
    )
    return nbformat.read(str(output), as_version=4)


def stdout_of(notebook):
    return "".join(
        out.get("text", "")
        for cell in cells_of(notebook, "code")
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def images_of(notebook):
    return sum(
        "image/png" in out.get("data", {})
        for cell in cells_of(notebook, "code")
        for out in cell.outputs
    )


def printed_accuracy(text, label="test accuracy"):
    match = re.search(rf"^{label}: (\d\.\d{{4}})$", text, flags=re.M)
    assert match, f"no '{label}: 0.xxxx' line in:\n{text[-3000:]}"
    return float(match.group(1))


def write_cifar10_batches(directory, per_batch, seed=0):
    """CIFAR-10's python batches, `per_batch` random images each: the layout and shapes of
    https://www.cs.toronto.edu/~kriz/cifar.html (rows of 3072 uint8: 1024 R, G, B values)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
             b"dog", b"frog", b"horse", b"ship", b"truck"]  # fmt: skip
    with open(directory / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"batch_label": batch.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{batch}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(directory / batch, "wb") as f:
            pickle.dump(entry, f)


def write_imagenet_folder(directory, splits, seed=0):
    """An ImageNet-layout folder: `split/<wnid>/<wnid>_<n>.JPEG`, RGB JPEGs of varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    wnids = ["n01440764", "n01443537", "n01484850"]  # ImageNet's first three synsets
    for split, per_class in splits.items():
        for wnid in wnids:
            (directory / split / wnid).mkdir(parents=True)
            for n in range(per_class):
                height, width = (int(v) for v in rng.integers(40, 72, 2))
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(
                    directory / split / wnid / f"{wnid}_{n}.JPEG", quality=90
                )
    return wnids


@pytest.mark.slow
def test_quickstart_notebook_trains_the_fashion_mnist_recipe(kernel, tmp_path, fashion_mnist_dir):
    notebook = execute(
        "quickstart_fashion_mnist.ipynb", kernel, tmp_path / "run",
        data_dir=fashion_mnist_dir, num_train=512, num_test=256, epochs=1, batch_size=64, width=4,
    )  # fmt: skip
    text = stdout_of(notebook)
    assert 0.0 <= printed_accuracy(text) <= 1.0
    assert "steps_per_epoch=8" in text  # 512 // 64
    # Images, augmentation grid, schedule, curves, confusion matrix.
    assert images_of(notebook) == 5
    assert (tmp_path / "run" / "fashion_mnist_run" / "model.keras").is_file()
    assert (tmp_path / "run" / "fashion_mnist_run" / "hparams.json").is_file()


@pytest.mark.slow
def test_cifar10_notebook_converts_cifar_batches_and_trains_page_recipe(kernel, tmp_path):
    per_batch = 40
    write_cifar10_batches(tmp_path / "cifar-10-batches-py", per_batch)
    notebook = execute(
        "cifar10_fast.ipynb", kernel, tmp_path / "run",
        source=f"cifar:{tmp_path / 'cifar-10-batches-py'}", epochs=1, batch_size=64, width=4,
        num_shards=2, num_workers=1,
    )  # fmt: skip
    text = stdout_of(notebook)
    assert f"{{'train': {5 * per_batch}, 'test': {per_batch}}}" in text
    assert 0.0 <= printed_accuracy(text) <= 1.0
    assert "same predictions" in text
    manifest = json.loads((tmp_path / "run" / "cifar10_tfrecords" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["num_records"] == 5 * per_batch
    shards = sorted(os.listdir(tmp_path / "run" / "cifar10_tfrecords"))
    assert [s for s in shards if "tfrecord" in s] == [
        f"cifar10-{split}.tfrecord-0000{i}-of-00002" for split in ("test", "train") for i in (0, 1)
    ]
    assert (tmp_path / "run" / "cifar10_run" / "model.keras").is_file()


@pytest.mark.slow
@pytest.mark.gcs
def test_imagenet_notebook_converts_a_jpeg_folder_to_gcs_and_trains_from_it(
    kernel, tmp_path, monkeypatch
):
    from gcs_emulator import GCSEndpoint

    splits = {"train": 6, "val": 2}
    wnids = write_imagenet_folder(tmp_path / "imagenet", splits)
    bucket = "ktricks-examples"
    with GCSEndpoint(buckets=[bucket]) as gcs:
        # The kernel inherits this process's environment; TF reads it when the kernel imports it.
        env = gcs.tf_env()
        for key in set(os.environ) - set(env):
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        notebook = execute(
            "imagenet_resnet50_gcs.ipynb", kernel, tmp_path / "run",
            source=f"folder:{tmp_path / 'imagenet'}",
            tfrecord_dir=f"gs://{bucket}/imagenet/tfrecords",
            work_dir=f"gs://{bucket}/imagenet/run",
            eval_split="val", num_shards=2, num_workers=1, epochs=1, batch_size=6, depth=18,
            image_size=32, resize_size=40, precision="float32",
        )  # fmt: skip
        objects = gcs.emulator.list_objects(bucket)
        manifest = json.loads(gcs.emulator.read_object(bucket, "imagenet/tfrecords/manifest.json"))
        assert gcs.proxy.authorized_requests > 0
    text = stdout_of(notebook)
    assert f"{{'train': {3 * splits['train']}, 'val': {3 * splits['val']}}} 3 classes" in text
    assert 0.0 <= printed_accuracy(text, "top-1 accuracy") <= 1.0
    # What landed in the bucket, read from the emulator's JSON API rather than through TF.
    assert manifest["label_names"] == wnids
    assert {s: manifest["splits"][s]["num_records"] for s in splits} == {
        s: len(wnids) * n for s, n in splits.items()
    }
    shards = sorted(name for name in objects if ".tfrecord-" in name)
    assert shards == [
        f"imagenet/tfrecords/imagenet-{split}.tfrecord-0000{i}-of-00002"
        for split in ("train", "val")
        for i in (0, 1)
    ]
    assert objects["imagenet/run/model.keras"] > 0
    assert "imagenet/run/hparams.json" in objects


@pytest.mark.slow
def test_lr_range_test_notebook_sweeps_chooses_and_trains(kernel, tmp_path, fashion_mnist_dir):
    num_steps = 20
    notebook = execute(
        "lr_range_test.ipynb", kernel, tmp_path / "run",
        data_dir=fashion_mnist_dir, num_train=512, num_test=256, batch_size=64, width=8,
        num_steps=num_steps, epochs=1,
    )  # fmt: skip
    text = stdout_of(notebook)
    steps = int(re.search(r"LRFinderResult\(steps=(\d+)", text).group(1))
    assert 1 <= steps <= num_steps
    chosen = float(re.search(r"chosen peak learning rate: (\S+)", text).group(1))
    assert 1e-5 <= chosen <= 10.0  # inside the swept range [min_lr, max_lr]
    assert 0.0 <= printed_accuracy(text) <= 1.0
    assert images_of(notebook) == 3  # the range test, the schedules, the training curves


@pytest.mark.slow
def test_training_techniques_notebook_runs_all_four(kernel, tmp_path, fashion_mnist_dir):
    notebook = execute(
        "training_techniques.ipynb", kernel, tmp_path / "run",
        data_dir=fashion_mnist_dir, num_train=384, num_test=256, batch_size=64, epochs=1,
        teacher_width=4, student_width=4, num_labelled=64, labelled_batch_size=16,
    )  # fmt: skip
    text = stdout_of(notebook)
    results = json.loads(re.search(r"^results: (\{.*\})$", text, flags=re.M).group(1))
    assert set(results) == {
        "teacher", "student, labels only", "student, distilled", "student, stability training",
        "stability flip rate at sigma 0.1", "plain flip rate at sigma 0.1",
        "labelled images only", "mean teacher: student", "mean teacher: teacher",
        "teacher + flip TTA", "teacher + flip & shift TTA",
    }  # fmt: skip
    assert all(0.0 <= value <= 1.0 for value in results.values())
    # 64 labelled + 320 unlabelled, 48 unlabelled per batch of 64: 320 // 48 batches.
    assert "64 labelled + 320 unlabelled images, 6 batches per epoch" in text
    assert "mirror invariance: exact" in text
