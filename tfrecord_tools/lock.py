"""One writer per output: a lock file `<output>/.tfrecord_tools.lock`, taken before anything is
encoded and removed when the conversion ends.

The lock file is JSON: `run_id`, `host`, `pid`, `started`, `heartbeat`, `expires` (Unix times).
While a conversion runs, a thread rewrites it every `heartbeat_s` seconds with
`expires = now + stale_after_s`. A second conversion into the same output is refused with
`OutputLockedError` naming the holder. A lock is *stale* — and is taken over, with a warning
naming the dead run — when

- its process is gone: same host, and no process has its pid (a run killed with SIGKILL), or
- it has expired: no heartbeat for `stale_after_s` seconds (a run killed on another machine;
  this compares clocks of two machines, so keep them in sync within the margin), or
- it is not a lock file we can read (remote), or unreadable and older than `stale_after_s`.

How atomic it is:

- Local disk: creation uses `O_CREAT | O_EXCL` and a takeover first renames the stale file to a
  name of its own (only one of two racing takers succeeds), so two writers can never both hold it.
- `gs://` through `tf.io.gfile` (and Beam's `FileSystems`): neither offers a create-if-absent
  precondition (GCS has one, `ifGenerationMatch=0`, but TF's client does not expose it). A writer
  checks that the object is absent, writes its lock, waits `storage._REMOTE_SETTLE_S` (1 s) and
  reads it back: it holds the lock only if it reads its own run id. Two writers that both find
  the object absent within the same fraction of a second both write; GCS keeps the last write,
  and both read back the same winner unless the loser's read lands before the winner's write
  (more than the settle time apart from the check). The residual race is closed at the next
  heartbeat, and again just before manifest.json is written: the holder re-reads the lock and a
  run that finds another run id stops with `LockLostError`, without writing its manifest. So at
  worst a losing run wrote some shard files (complete ones, renamed into place) before stopping;
  the manifest only ever describes one conversion.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time

from tfrecord_tools import storage
from tfrecord_tools.storage import GfileStore, Store, is_remote, join

__all__ = ["OutputLock", "OutputLockedError", "LockLostError", "LockInfo", "LOCK_NAME"]

logger = logging.getLogger("tfrecord_tools")

LOCK_NAME = ".tfrecord_tools.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0  # six missed heartbeats


class OutputLockedError(RuntimeError):
    """Another conversion holds the output's lock (it is writing into the same output)."""


class LockLostError(RuntimeError):
    """This run's lock was taken over by another conversion; the run stops without a manifest."""


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """The content of a lock file."""

    run_id: str
    host: str
    pid: int
    started: float
    heartbeat: float
    expires: float

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def parse(cls, data: bytes | None) -> LockInfo | None:
        """The lock in `data`, or None when it is not a readable lock file."""
        if not data:
            return None
        try:
            raw = json.loads(data)
            return cls(
                str(raw["run_id"]),
                str(raw["host"]),
                int(raw["pid"]),
                float(raw["started"]),
                float(raw["heartbeat"]),
                float(raw["expires"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        age = max(0.0, time.time() - self.heartbeat)
        return (
            f"run {self.run_id} (host {self.host}, pid {self.pid}, started {started}, "
            f"last heartbeat {age:.0f} s ago)"
        )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


class OutputLock:
    """The lock of one conversion run on `output` (context manager: acquire ... release).

    Example:

    ```python
    from tfrecord_tools.lock import OutputLock
    from tfrecord_tools.storage import new_run_id
    import os; os.makedirs("/tmp/locked", exist_ok=True)
    with OutputLock("/tmp/locked", new_run_id()) as lock:
        lock.check()          # raises LockLostError if another run took it over
    ```

    Args:
        output: the output directory (local or `gs://`); it must exist.
        run_id: this run's id (`storage.new_run_id()`).
        store: file access (`storage.GfileStore()` by default; Beam passes its own).
        heartbeat_s: seconds between heartbeats.
        stale_after_s: a lock without heartbeat for this long is stale.
    """

    def __init__(
        self,
        output: str,
        run_id: str,
        store: Store | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.output = output
        self.path = join(output, LOCK_NAME)
        self.run_id = run_id
        self.store = store or GfileStore()
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self.held = False

    def _info(self) -> LockInfo:
        now = time.time()
        return LockInfo(
            self.run_id,
            storage.host_name(),
            os.getpid(),
            self.started,
            now,
            now + self.stale_after_s,
        )

    def _stale_reason(self, current: LockInfo | None) -> str | None:
        if current is None:
            if is_remote(self.path):
                return "the lock file is not readable as a lock"
            try:
                age = time.time() - os.stat(self.path).st_mtime
            except FileNotFoundError:
                return "the lock file disappeared"
            if age > self.stale_after_s:
                return f"the lock file is unreadable and {age:.0f} s old"
            return None
        if current.host == storage.host_name() and not _process_alive(current.pid):
            return f"its process {current.pid} on this host is no longer running"
        if time.time() > current.expires:
            return f"no heartbeat for {time.time() - current.heartbeat:.0f} s"
        return None

    def _locked_error(self, current: LockInfo | None) -> OutputLockedError:
        holder = current.describe() if current else "a run whose lock file is being written"
        return OutputLockedError(
            f"output {self.output!r} is being written by another conversion: {holder}. Wait "
            f"for it to finish, or choose another output. If that run is dead, its lock "
            f"({self.path}) is taken over automatically once its process is gone (same host) "
            f"or after {self.stale_after_s:.0f} s without heartbeat."
        )

    def acquire(self) -> OutputLock:
        """Take the lock (or a stale one over) and start the heartbeat.

        Raises:
            OutputLockedError: another live run holds it.
            StorageError: the output is not writable (the lock is the first file written).
        """
        for _ in range(3):
            if self.store.create_exclusive(self.path, self._info().to_bytes()):
                break
            current = LockInfo.parse(self.store.read(self.path))
            reason = self._stale_reason(current)
            if reason is None:
                raise self._locked_error(current)
            logger.warning(
                "%s: taking over the stale lock of %s: %s.",
                self.output,
                current.describe() if current else "an unknown run",
                reason,
            )
            if self._take_over():
                break
        else:
            raise self._locked_error(LockInfo.parse(self.store.read(self.path)))
        self.held = True
        self._thread = threading.Thread(target=self._beat, daemon=True, name="tfrecord-lock")
        self._thread.start()
        return self

    def _take_over(self) -> bool:
        if not is_remote(self.path):
            # Rename first: of two runs taking over the same stale lock, one rename fails.
            aside = f"{self.path}.stale-{self.run_id}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return False  # another run took it over (or it was released): try again
            os.remove(aside)
            return False  # loop: create it exclusively
        self.store.write(self.path, self._info().to_bytes())
        time.sleep(storage._REMOTE_SETTLE_S)
        current = LockInfo.parse(self.store.read(self.path))
        if current is None or current.run_id != self.run_id:
            raise self._locked_error(current)
        return True

    def _owner(self) -> LockInfo | None:
        return LockInfo.parse(self.store.read(self.path))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = self._owner()
                if current is None or current.run_id != self.run_id:
                    self._lost = (
                        f"the lock is now held by {current.describe()}"
                        if current
                        else "the lock file was removed"
                    )
                    return
                if is_remote(self.path):
                    self.store.write(self.path, self._info().to_bytes())
                else:
                    self.store.write_atomic(self.path, self._info().to_bytes(), self.run_id)
            except Exception as e:  # noqa: BLE001 - a missed heartbeat is retried next time
                logger.debug("lock heartbeat failed: %s", e)

    def check(self, reread: bool = False) -> None:
        """Raise `LockLostError` if another run took the lock over (`reread`: look now)."""
        if reread and self._lost is None:
            current = self._owner()
            if current is None or current.run_id != self.run_id:
                self._lost = (
                    f"the lock is now held by {current.describe()}"
                    if current
                    else "the lock file was removed"
                )
        if self._lost is not None:
            raise LockLostError(
                f"conversion into {self.output!r} stopped: {self._lost}. Another conversion is "
                "writing this output; this run wrote no manifest.json."
            )

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.held:
            current = self._owner()
            if current is not None and current.run_id == self.run_id:
                try:
                    self.store.delete([self.path])
                except Exception as e:  # noqa: BLE001 - a leftover lock is stale, taken over later
                    logger.warning("could not remove the lock %s: %s", self.path, e)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
