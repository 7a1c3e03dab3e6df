"""tfrecord_tools on `gs://` for real: TF's own GCS client against fake-gcs-server on 127.0.0.1.

TF reads its GCS settings (proxy, CA bundle, token) at import, so everything that touches `gs://`
runs in a subprocess started with `GCSEndpoint.tf_env()` (see tests/gcs_emulator.py). The
oracle for what landed in the bucket is the emulator's JSON API read over plain HTTP from this
process, never TF itself; the oracle for the data is the NumPy arrays the test generated.
"""

import hashlib
import http.client
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gcs_emulator import DUMMY_TOKEN, GCSEndpoint

pytestmark = pytest.mark.gcs

BUCKET = "ktricks-test"
SUBPROCESS_TIMEOUT = 300


@pytest.fixture
def gcs():
    with GCSEndpoint(buckets=[BUCKET]) as endpoint:
        yield endpoint


def _run_python(code, env, cwd, *args):
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def _assert_ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


def _last_json_line(stdout):
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _assert_token_never_logged(gcs, *outputs):
    # TF did authenticate with the token (counted by the proxy), yet it shows up nowhere.
    assert gcs.proxy.authorized_requests > 0
    for text in outputs:
        assert DUMMY_TOKEN not in text
    assert DUMMY_TOKEN not in gcs.emulator.log_text()


GFILE_PLUMBING = r"""
import json
import tensorflow as tf

g = tf.io.gfile
base = "gs://{bucket}/plumbing"
payload = bytes(range(256)) * 1000
g.makedirs(base + "/sub")
with g.GFile(base + "/a.bin", "wb") as f:
    f.write(payload)
with g.GFile(base + "/empty", "wb") as f:
    f.write(b"")  # GFile only creates the object once something (even b"") is written
read_back = g.GFile(base + "/a.bin", "rb").read()
before = sorted(g.listdir(base))
g.rename(base + "/a.bin", base + "/b.bin", overwrite=True)
print(json.dumps({{
    "read_ok": read_back == payload,
    "listdir_before": before,
    "listdir_after": sorted(g.listdir(base)),
    "exists": [g.exists(base + "/b.bin"), g.exists(base + "/a.bin"), g.exists(base + "/empty")],
    "isdir_sub": g.isdir(base + "/sub"),
    "size_b": g.stat(base + "/b.bin").length,
    "size_empty": g.stat(base + "/empty").length,
    "glob": sorted(g.glob(base + "/*.bin")),
}}))
"""


def test_tf_gfile_write_read_list_rename_and_empty_file_reach_the_emulator(gcs, tmp_path):
    proc = _run_python(GFILE_PLUMBING.format(bucket=BUCKET), gcs.tf_env(), tmp_path)
    _assert_ok(proc)
    got = _last_json_line(proc.stdout)
    payload = bytes(range(256)) * 1000

    assert got["read_ok"]
    assert got["listdir_before"] == ["a.bin", "empty", "sub/"]
    assert got["listdir_after"] == ["b.bin", "empty", "sub/"]
    assert got["exists"] == [True, False, True]
    assert got["isdir_sub"] is True
    assert got["size_b"] == len(payload)
    assert got["size_empty"] == 0
    assert got["glob"] == [f"gs://{BUCKET}/plumbing/b.bin"]
    # Independent of TF: the emulator's own listing and bytes. makedirs leaves a 0-byte
    # "dir/" marker object per level, as on real GCS.
    assert gcs.emulator.list_objects(BUCKET, "plumbing/") == {
        "plumbing/": 0,
        "plumbing/b.bin": len(payload),
        "plumbing/empty": 0,
        "plumbing/sub/": 0,
    }
    assert gcs.emulator.read_object(BUCKET, "plumbing/b.bin") == payload
    # The traffic really went through TF's https client and our proxy to the Google hostnames.
    hosts = {host for _, host, _, _ in gcs.proxy.requests}
    assert hosts == {"www.googleapis.com", "storage.googleapis.com"}
    _assert_token_never_logged(gcs, proc.stdout, proc.stderr)


def test_proxy_refuses_to_tunnel_anything_but_google_storage_hosts(gcs):
    proxy_port = int(gcs.proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    try:
        conn.request("CONNECT", "example.com:443", headers={"Host": "example.com:443"})
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 403
    assert ("CONNECT", "example.com", "<refused>", 403) in gcs.proxy.requests


# --- the conversion on gs:// ---------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Both scripts below start with this helper: verify `output`, then save what `read_dataset` reads
# back from it to `result_path` (an .npz of x_/y_ arrays per split); returns whether verify passed.
_VERIFY_AND_READ_BACK = r"""
import json, sys
import numpy as np
import tfrecord_tools


def verify_and_read_back(output, result_path):
    report = tfrecord_tools.verify(output)
    arrays = {}
    for split in ("train", "test"):
        pairs = list(
            tfrecord_tools.read_dataset(output, split, deterministic=True).as_numpy_iterator()
        )
        arrays["x_" + split] = np.stack([image for image, _ in pairs])
        arrays["y_" + split] = np.array([label for _, label in pairs])
    np.savez(result_path, **arrays)
    return bool(report.ok)
"""

CONVERT_VERIFY_READ = (
    _VERIFY_AND_READ_BACK
    + r"""
npz, output, result_path = sys.argv[1:4]
manifest = tfrecord_tools.convert(
    "numpy:" + npz, output, num_shards=3, num_workers=2, name="toy", progress=False
)
print(json.dumps({"verify_ok": verify_and_read_back(output, result_path), "manifest": manifest}))
"""
)

READ_BACK = (
    _VERIFY_AND_READ_BACK
    + r"""
output, result_path = sys.argv[1:3]
print(json.dumps({"verify_ok": verify_and_read_back(output, result_path)}))
"""
)

# The console script `tfrecord-tools` as pip installs it: `main()` reading sys.argv.
CLI = (
    "import sys; from tfrecord_tools.cli import main; sys.argv[0] = 'tfrecord-tools'; "
    "sys.exit(main())"
)


def _source_npz(path, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (90, 8, 6, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 7, 90),
        "x_test": rng.integers(0, 256, (21, 8, 6, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 7, 21),
    }
    np.savez(path, **arrays)
    return arrays


def _multiset(x, y):
    return sorted((int(label), image.tobytes()) for image, label in zip(x, y))


def _assert_same_records(result_npz, source):
    with np.load(result_npz) as got:
        for split in ("train", "test"):
            assert got[f"x_{split}"].dtype == np.uint8
            assert _multiset(got[f"x_{split}"], got[f"y_{split}"]) == _multiset(
                source[f"x_{split}"], source[f"y_{split}"]
            )


def _with_repo_on_path(env):
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def _assert_bucket_holds_exactly_the_manifest_shards(emulator, prefix, manifest):
    """Final names only (no temporaries or sidecars), each with the manifest's size and sha256;
    beside them manifest.json and its tfds metadata."""
    objects = emulator.list_objects(BUCKET, prefix + "/")
    # tf.io.gfile.makedirs leaves empty "dir/" marker objects, as on real GCS.
    markers = {name: size for name, size in objects.items() if name.endswith("/")}
    assert set(markers.values()) <= {0}
    objects = {name: size for name, size in objects.items() if name not in markers}
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    from tfrecord_tools.tfds_info import tfds_files

    tfds_metadata = [f"{prefix}/{name}" for name in tfds_files(manifest)]
    assert sorted(objects) == sorted(
        [f"{prefix}/manifest.json", *tfds_metadata] + [f"{prefix}/{s['file']}" for s in shards]
    )
    for shard in shards:
        data = emulator.read_object(BUCKET, f"{prefix}/{shard['file']}")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (
            shard["num_bytes"],
            shard["sha256"],
        )


@pytest.mark.slow
def test_convert_verify_read_dataset_on_gs_through_tf_own_client(gcs, tmp_path):
    source = _source_npz(tmp_path / "toy.npz")
    output = f"gs://{BUCKET}/api"
    proc = _run_python(
        CONVERT_VERIFY_READ,
        _with_repo_on_path(gcs.tf_env()),
        tmp_path,
        str(tmp_path / "toy.npz"),
        output,
        str(tmp_path / "got.npz"),
    )
    _assert_ok(proc)
    result = _last_json_line(proc.stdout)

    assert result["verify_ok"] is True
    manifest = result["manifest"]
    assert [manifest["splits"][s]["num_records"] for s in ("train", "test")] == [90, 21]
    assert [f"{s['file']}" for s in manifest["splits"]["train"]["shards"]] == [
        f"toy-train.tfrecord-{i:05d}-of-00003" for i in range(3)
    ]
    _assert_same_records(tmp_path / "got.npz", source)
    _assert_bucket_holds_exactly_the_manifest_shards(gcs.emulator, "api", manifest)
    uploads = [r for r in gcs.proxy.requests if r[0] in ("POST", "PUT") and "/upload/" in r[2]]
    assert uploads, "TF's client uploaded nothing through the proxy"
    _assert_token_never_logged(gcs, proc.stdout, proc.stderr)


@pytest.mark.slow
def test_cli_convert_and_verify_on_gs_and_verify_names_a_damaged_shard(gcs, tmp_path):
    _source_npz(tmp_path / "toy.npz", seed=1)
    output = f"gs://{BUCKET}/cli"
    env = _with_repo_on_path(gcs.tf_env())

    def cli(*args):
        return _run_python(CLI, env, tmp_path, *args)

    converted = cli(
        "convert", f"numpy:{tmp_path / 'toy.npz'}", output,
        "--name", "toy", "--num-shards", "2", "--num-workers", "2", "--quiet",
    )  # fmt: skip
    _assert_ok(converted)
    verified = cli("verify", output)
    _assert_ok(verified)

    shard = "cli/toy-train.tfrecord-00001-of-00002"
    data = bytearray(gcs.emulator.read_object(BUCKET, shard))
    data[len(data) // 2] ^= 0x40
    gcs.emulator.upload_object(BUCKET, shard, bytes(data))
    damaged = cli("verify", output, "--quiet")  # --quiet: only problems are printed

    assert damaged.returncode != 0
    assert "toy-train.tfrecord-00001-of-00002" in damaged.stdout + damaged.stderr
    assert "toy-train.tfrecord-00000-of-00002" not in damaged.stdout + damaged.stderr
    _assert_token_never_logged(gcs, *(p.stdout + p.stderr for p in (converted, verified, damaged)))


# --- Apache Beam writing to the emulator ---------------------------------------------------------

BEAM_CONVERT = r"""
import sys
from tfrecord_tools.beam import main
sys.exit(main([
    "numpy:" + sys.argv[1], sys.argv[2], "--name", "toy", "--num-shards", "3",
    "--project=test-project",
]))
"""


@pytest.mark.slow
def test_beam_writes_shards_to_gcs_emulator_that_tf_verifies_and_reads_back(tmp_path):
    pytest.importorskip("apache_beam")
    from gcs_emulator import GcpStorageEmulator

    source = _source_npz(tmp_path / "toy.npz", seed=2)
    output = f"gs://{BUCKET}/beam"
    # gcp-storage-emulator serves google-cloud-storage, which Beam's gs:// filesystem uses
    # (fake-gcs-server lacks the batch API that Beam's rename needs); TF reads it through the proxy.
    with GCSEndpoint(buckets=[BUCKET], emulator=GcpStorageEmulator()) as gcs:
        beam_env = _with_repo_on_path({**os.environ, **gcs.emulator.python_client_env()})
        written = _run_python(BEAM_CONVERT, beam_env, tmp_path, str(tmp_path / "toy.npz"), output)
        _assert_ok(written)
        manifest = json.loads(gcs.emulator.read_object(BUCKET, "beam/manifest.json"))
        _assert_bucket_holds_exactly_the_manifest_shards(gcs.emulator, "beam", manifest)

        read = _run_python(
            READ_BACK, _with_repo_on_path(gcs.tf_env()), tmp_path, output, str(tmp_path / "got.npz")
        )
        _assert_ok(read)
        assert _last_json_line(read.stdout)["verify_ok"] is True
        _assert_token_never_logged(gcs, read.stdout, read.stderr, written.stdout, written.stderr)
    _assert_same_records(tmp_path / "got.npz", source)
    assert [manifest["splits"][s]["num_records"] for s in ("train", "test")] == [90, 21]
