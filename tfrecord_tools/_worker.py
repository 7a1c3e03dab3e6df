"""Worker processes that build shards (`tfrecord_tools.shard.write_shard`) for the local writer.

Each worker is `python -m tfrecord_tools._worker`, talking pickled, length-prefixed messages over
its stdin/stdout: the parent sends a `BuildRequest`, the worker answers with `Progress` messages
and one `Built` or `Failed`. The worker streams the shard straight into its temporary file (named
by the parent, carrying the run id), so neither process ever holds a shard's bytes.

A fresh interpreter (rather than `multiprocessing`) because:
- fork is unsafe once TensorFlow is loaded in the parent;
- multiprocessing's spawn re-imports the caller's `__main__`, which makes every user script
  without an `if __name__ == "__main__":` guard recurse, and imports TensorFlow again in every
  worker (~3 s each) when the script imports it at the top.
A worker imports NumPy, zlib, Pillow and google-crc32c only (TensorFlow only to write a `gs://`
shard, and TensorFlow with tensorflow-datasets to read a `tfds:` source's slice). When the
parent dies, the worker's stdin closes and it exits.

This module imports the shard builder; the writer imports this module, never the reverse.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from tfrecord_tools.options import EncodingOptions
from tfrecord_tools.shard import ShardResult, write_shard

__all__ = ["WorkerPool", "WorkerError", "BuildRequest", "Progress", "Built", "Failed"]

_HEADER = struct.Struct("<Q")


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """Parent -> worker: build the shard of `payload` into the new file `path`."""

    task_id: int
    payload: Any
    encoding: EncodingOptions
    path: str


@dataclasses.dataclass(frozen=True)
class Progress:
    """Worker -> parent: `count` more records encoded for task `task_id`."""

    task_id: int
    count: int


@dataclasses.dataclass(frozen=True)
class Built:
    """Worker -> parent: the shard of task `task_id` is complete in its file."""

    task_id: int
    result: ShardResult


@dataclasses.dataclass(frozen=True)
class Failed:
    """Worker -> parent: task `task_id` raised `error` (its file is already removed)."""

    task_id: int
    error: BaseException
    traceback: str


def _read_message(stream):
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _write_message(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - fall back to the message when the type does not pickle
        return RuntimeError(f"{type(error).__name__}: {error}")


def main() -> None:
    """Serve `BuildRequest`s until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the message stream
    while True:
        request = _read_message(stdin)
        if request is None:
            return

        def progress(n, task_id=request.task_id):
            _write_message(stdout, Progress(task_id, n))

        try:
            result = write_shard(request.payload, request.encoding, request.path, progress)
            _write_message(stdout, Built(request.task_id, result))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent
            _write_message(stdout, Failed(request.task_id, _picklable(e), traceback.format_exc()))


class WorkerError(RuntimeError):
    """A worker process died without answering (killed, out of memory, ...)."""


class WorkerPool:
    """Worker processes, reused for every `run` until `close`; `grow` adds more.

    Starting them before the parent reads the source overlaps their start-up (interpreter and
    NumPy import) with that read; the writer starts only as many as there are shards to build.
    """

    def __init__(self, num_workers: int = 0) -> None:
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, self._env.get("PYTHONPATH")) if p
        )
        self.procs: list[subprocess.Popen] = []
        self.grow(num_workers)

    def grow(self, total: int) -> None:
        """Start workers until there are `total`."""
        while len(self.procs) < total:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tfrecord_tools._worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=self._env,
                )
            )

    def run(
        self,
        requests: Sequence[BuildRequest],
        on_done: Callable[[int, ShardResult], None],
        progress: Callable[[int], None],
    ) -> None:
        """Build `requests` in the workers.

        Calls `progress(n)` for progress messages and `on_done(task_id, result)` for each
        finished task, both in the calling thread. A worker's exception is re-raised here (after
        stopping all workers; the pool is then closed), with the worker's traceback as a note.
        """
        if not self.procs:
            raise RuntimeError("the worker pool is closed")
        todo: queue.Queue = queue.Queue()
        for request in requests:
            todo.put(request)
        events: queue.Queue = queue.Queue()
        stop = threading.Event()

        def serve(proc):
            try:
                while not stop.is_set():
                    try:
                        request = todo.get_nowait()
                    except queue.Empty:
                        return
                    _write_message(proc.stdin, request)
                    while True:
                        message = _read_message(proc.stdout)
                        if message is None:
                            events.put(("crash", request.task_id, proc.wait(), None))
                            return
                        events.put(message)
                        if not isinstance(message, Progress):
                            break
            except (BrokenPipeError, OSError, ValueError) as e:
                if not stop.is_set():
                    events.put(("crash", None, proc.poll(), repr(e)))

        threads = [
            threading.Thread(target=serve, args=(p,), daemon=True)
            for p in self.procs[: len(requests)]
        ]
        for t in threads:
            t.start()
        remaining = len(requests)
        try:
            while remaining:
                message = events.get()
                if isinstance(message, Progress):
                    progress(message.count)
                elif isinstance(message, Built):
                    remaining -= 1
                    on_done(message.task_id, message.result)
                elif isinstance(message, Failed):
                    error = message.error
                    if hasattr(error, "add_note"):
                        error.add_note(
                            f"In worker process (task {message.task_id}):\n{message.traceback}"
                        )
                    raise error
                else:
                    _, task_id, code, extra = message
                    raise WorkerError(
                        f"a worker process exited with code {code} while building shard "
                        f"{task_id}" + (f" ({extra})" if extra else "")
                    )
        finally:
            stop.set()
            if remaining:  # failed or interrupted: workers may be mid-task, stop them now
                self.close(kill=True)
            for t in threads:
                t.join(timeout=5)

    def close(self, kill: bool = False) -> None:
        """Stop the workers (closing stdin ends an idle worker; `kill` ends a busy one)."""
        procs, self.procs = self.procs, []
        for p in procs:
            if kill and p.poll() is None:
                p.kill()
            try:
                if p.stdin is not None:
                    p.stdin.close()
            except OSError:
                pass
        for p in procs:
            p.wait()
            if p.stdout is not None:
                p.stdout.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)


if __name__ == "__main__":
    # Run the copy imported under its package name, so that the messages it pickles name
    # `tfrecord_tools._worker.Built` (which the parent can load), not `__main__.Built`.
    from tfrecord_tools._worker import main as package_main

    package_main()
