"""File access of the writers (local disk or `gs://`), with storage failures as `StorageError`.

Local paths use the `os` module (worker processes stay TensorFlow-free); `scheme://` paths use
`tf.io.gfile`. `Store` is the small interface the plan, the lock and the resume rule need;
`GfileStore` implements it here and `tfrecord_tools.beam` implements it over Beam's
`FileSystems`, so both writers find, delete and lock files by the same rules.

Temporary names carry the run id of the conversion that wrote them:
`<final name>.tmp-<run id>-<random>`, so a run removes its own temporary files, or those of a run
that provably no longer holds the output's lock (`tfrecord_tools.lock`), never another live run's.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import socket
import time
from typing import BinaryIO, Protocol

__all__ = [
    "StorageError",
    "Store",
    "GfileStore",
    "new_run_id",
    "temp_name",
    "temp_run_id",
    "is_remote",
    "open_write",
    "remove_quietly",
    "storage_error",
]

TEMP_MARK = ".tmp-"


class StorageError(OSError):
    """Writing the output failed (disk full, read-only, not a directory, no permission, ...).

    The message names the path and the cause; the CLI exits with code 2.
    """

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"cannot write {path!r}: {cause}")

    def __reduce__(self):  # crosses process boundaries intact
        return (type(self), (self.path, self.cause))


_CAUSES = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is an existing file, not a directory",
    errno.EEXIST: "exists and is not a directory",
    errno.EISDIR: "is a directory",
}


def storage_error(path: str, error: BaseException) -> StorageError:
    """A `StorageError` naming `path` and the cause of `error` (an OSError or a TF OpError)."""
    if isinstance(error, StorageError):
        return error
    code = getattr(error, "errno", None)
    if code in _CAUSES:
        cause = f"{_CAUSES[code]} ({os.strerror(code)})"
    else:
        message = getattr(error, "message", None) or str(error)
        cause = f"{type(error).__name__}: {message.strip().splitlines()[0] if message else ''}"
    return StorageError(path, cause)


def is_remote(path: str) -> bool:
    """True for `scheme://` paths (gs://, ...), handled by `tf.io.gfile`."""
    return "://" in path


def new_run_id() -> str:
    """An id for one conversion run: `<pid>x<8 random hex digits>` (no `-`, so temp names parse)."""
    return f"{os.getpid()}x{os.urandom(4).hex()}"


def temp_name(path: str, run_id: str) -> str:
    """The temporary name for writing `path` in run `run_id`: `<path>.tmp-<run id>-<random>`."""
    return f"{path}{TEMP_MARK}{run_id}-{os.urandom(3).hex()}"


def temp_run_id(name: str) -> str | None:
    """The run id in a temporary name (`temp_name`), else None."""
    if TEMP_MARK not in name:
        return None
    return name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0]


def open_write(path: str) -> BinaryIO:
    """Open `path` for writing in binary (local: buffered `open`; remote: `tf.io.gfile.GFile`)."""
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "wb")
    return open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - the caller closes it


def remove_quietly(path: str) -> None:
    """Delete `path` if it exists (used on error paths: never raises)."""
    try:
        if is_remote(path):
            import tensorflow as tf

            tf.io.gfile.remove(path)
        else:
            os.remove(path)
    except Exception:  # noqa: BLE001 - already gone or unreachable: nothing more to do here
        pass


class Store(Protocol):
    """What the plan, the lock and the resume rule need from a file system."""

    def __init__(self) -> None:
        # Written out only to be annotated: without it, `Protocol` puts its own unannotated
        # `__init__` here. Like that one, it refuses to build the protocol itself (a protocol
        # constrains no constructor: implementations take the arguments they need).
        if type(self) is Store:
            raise TypeError("Protocols cannot be instantiated")

    def exists(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes | None: ...
    def write(self, path: str, data: bytes) -> None: ...
    def write_atomic(self, path: str, data: bytes, run_id: str) -> None: ...
    def create_exclusive(self, path: str, data: bytes) -> bool: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, paths: list[str]) -> None: ...
    def list(self, directory: str, pattern: str) -> list[str]: ...
    def makedirs(self, directory: str) -> None: ...
    def size(self, path: str) -> int | None: ...
    def sha256(self, path: str) -> str | None: ...


def join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


class GfileStore:
    """`Store` over the local file system (`os`) and `tf.io.gfile` for `scheme://` paths.

    Every failure to write becomes a `StorageError` naming the path.
    """

    @staticmethod
    def _gfile():
        import tensorflow as tf

        return tf.io.gfile

    def exists(self, path: str) -> bool:
        return self._gfile().exists(path) if is_remote(path) else os.path.exists(path)

    def read(self, path: str) -> bytes | None:
        try:
            if is_remote(path):
                with self._gfile().GFile(path, "rb") as f:
                    return f.read()
            with open(path, "rb") as f:
                return f.read()
        except Exception:  # noqa: BLE001 - absent or unreadable: the caller decides
            return None

    def write(self, path: str, data: bytes) -> None:
        try:
            with open_write(path) as f:
                f.write(data)
        except Exception as e:  # noqa: BLE001 - OSError locally, tf.errors.OpError remotely
            raise storage_error(path, e) from e

    def write_atomic(self, path: str, data: bytes, run_id: str) -> None:
        tmp = temp_name(path, run_id)
        try:
            self.write(tmp, data)
            self.rename(tmp, path)
        except StorageError:
            remove_quietly(tmp)
            raise

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` holding `data` only if it does not exist; False if it does.

        Local: `O_CREAT | O_EXCL`, atomic. Remote (`tf.io.gfile` has no create-if-absent
        precondition): check, write, wait, read back — see `tfrecord_tools.lock` for the race.
        """
        if not is_remote(path):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            except OSError as e:
                raise storage_error(path, e) from e
            try:
                os.write(fd, data)
            except OSError as e:
                os.close(fd)
                remove_quietly(path)
                raise storage_error(path, e) from e
            os.close(fd)
            return True
        if self.exists(path):
            return False
        self.write(path, data)
        time.sleep(_REMOTE_SETTLE_S)
        return self.read(path) == data

    def rename(self, src: str, dst: str) -> None:
        try:
            if is_remote(src):
                self._gfile().rename(src, dst, overwrite=True)
            else:
                os.replace(src, dst)
        except Exception as e:  # noqa: BLE001
            raise storage_error(dst, e) from e

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                if is_remote(path):
                    self._gfile().remove(path)
                else:
                    os.remove(path)
            except FileNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                if self.exists(path):
                    raise storage_error(path, e) from e

    def list(self, directory: str, pattern: str) -> list[str]:
        """Base names in `directory` matching the glob `pattern` (sorted)."""
        try:
            names = (
                [n.rstrip("/") for n in self._gfile().listdir(directory)]
                if is_remote(directory)
                else os.listdir(directory)
            )
        except Exception:  # noqa: BLE001 - no directory yet: nothing in it
            return []
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def makedirs(self, directory: str) -> None:
        if not is_remote(directory):
            if os.path.exists(directory) and not os.path.isdir(directory):
                raise StorageError(directory, "the output is an existing file, not a directory")
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise storage_error(directory, e) from e
            return
        try:
            self._gfile().makedirs(directory)
        except Exception as e:  # noqa: BLE001
            raise storage_error(directory, e) from e

    def size(self, path: str) -> int | None:
        try:
            if is_remote(path):
                return self._gfile().stat(path).length
            return os.stat(path).st_size
        except Exception:  # noqa: BLE001 - absent
            return None

    def sha256(self, path: str) -> str | None:
        from tfrecord_tools.manifest import sha256_stream

        try:
            if is_remote(path):
                with self._gfile().GFile(path, "rb") as f:
                    return sha256_stream(f)[0]
            with open(path, "rb") as f:
                return sha256_stream(f)[0]
        except Exception:  # noqa: BLE001 - absent or unreadable: not a kept shard
            return None


# After a remote create, wait this long before reading the object back, so that a second writer
# that checked "absent" at the same moment has had its write land too (the last write wins, and
# both read back the same winner).
_REMOTE_SETTLE_S = 1.0


def host_name() -> str:
    return socket.gethostname()
