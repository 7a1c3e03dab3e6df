"""Worker processes that build shards for `tfrecord_tools.writer`.

Each worker is `python -m tfrecord_tools._worker`, talking pickled, length-prefixed messages over
its stdin/stdout. A fresh interpreter (rather than `multiprocessing`) because:
- fork is unsafe once TensorFlow is loaded in the parent;
- multiprocessing's spawn re-imports the caller's `__main__`, which makes every user script
  without an `if __name__ == "__main__":` guard recurse, and imports TensorFlow again in every
  worker (~3 s each) when the script imports it at the top.
A worker imports NumPy, zlib, Pillow and google-crc32c only. When the parent dies, the worker's
stdin closes and it exits.
"""

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import traceback

_HEADER = struct.Struct("<Q")


def _read_message(stream):
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _write_message(stream, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _picklable(error):
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - fall back to the message when the type does not pickle
        return RuntimeError(f"{type(error).__name__}: {error}")


def main():
    """Serve build requests `(task_id, payload, options)` until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the message stream
    from tfrecord_tools.writer import build_shard

    while True:
        message = _read_message(stdin)
        if message is None:
            return
        task_id, payload, options = message

        def progress(n, task_id=task_id):
            _write_message(stdout, ("progress", task_id, n))

        try:
            result = build_shard(payload, progress=progress, **options)
            _write_message(stdout, ("done", task_id, result))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent
            _write_message(stdout, ("error", task_id, _picklable(e), traceback.format_exc()))


class WorkerError(RuntimeError):
    """A worker process died without answering (killed, out of memory, ...)."""


class WorkerPool:
    """`num_workers` worker processes, started at once and reused for every `run` until `close`.

    Starting them before the parent reads the source overlaps their start-up (interpreter and
    NumPy import) with that read, and one pool serves every split of a conversion.
    """

    def __init__(self, num_workers):
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tfrecord_tools._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            for _ in range(num_workers)
        ]

    def run(self, tasks, options, on_done, progress):
        """Build `tasks` [(task_id, payload)] in the workers.

        Calls `progress(n)` for progress messages and `on_done(task_id, result)` for each finished
        task, both in the calling thread. A worker's exception is re-raised here (after stopping
        all workers; the pool is then closed), with the worker's traceback attached as a note.
        """
        if not self.procs:
            raise RuntimeError("the worker pool is closed")
        todo = queue.Queue()
        for task in tasks:
            todo.put(task)
        events = queue.Queue()
        stop = threading.Event()

        def serve(proc):
            try:
                while not stop.is_set():
                    try:
                        task_id, payload = todo.get_nowait()
                    except queue.Empty:
                        return
                    _write_message(proc.stdin, (task_id, payload, options))
                    while True:
                        message = _read_message(proc.stdout)
                        if message is None:
                            events.put(("crash", task_id, proc.wait(), None))
                            return
                        events.put(message)
                        if message[0] != "progress":
                            break
            except (BrokenPipeError, OSError, ValueError) as e:
                if not stop.is_set():
                    events.put(("crash", None, proc.poll(), repr(e)))

        threads = [
            threading.Thread(target=serve, args=(p,), daemon=True) for p in self.procs[: len(tasks)]
        ]
        for t in threads:
            t.start()
        remaining = len(tasks)
        try:
            while remaining:
                kind, task_id, value, extra = (*events.get(), None, None)[:4]
                if kind == "progress":
                    progress(value)
                elif kind == "done":
                    remaining -= 1
                    on_done(task_id, value)
                elif kind == "error":
                    if hasattr(value, "add_note"):
                        value.add_note(f"In worker process (task {task_id}):\n{extra}")
                    raise value
                else:
                    raise WorkerError(
                        f"a worker process exited with code {value} while building shard "
                        f"{task_id}" + (f" ({extra})" if extra else "")
                    )
        finally:
            stop.set()
            if remaining:  # failed or interrupted: workers may be mid-task, stop them now
                self.close(kill=True)
            for t in threads:
                t.join(timeout=5)

    def close(self, kill=False):
        """Stop the workers (closing stdin ends an idle worker; `kill` ends a busy one)."""
        procs, self.procs = self.procs, []
        for p in procs:
            if kill and p.poll() is None:
                p.kill()
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            p.wait()
            p.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(kill=exc[0] is not None)


if __name__ == "__main__":
    main()
