"""One extraction per store at a time: a lock beside the store that a dead process does not keep.

The lock is a directory ``<store>.lock/`` beside the store (creating a store empties the store's
own directory, so the lock cannot live inside it) holding one file per process of the
extraction, ``rank<r>-of<w>.json``, with its pid, host and start time. The holder touches its
file every ``HEARTBEAT_S`` seconds. A lock file is stale, and taken over, when its process is
gone (same host, pid no longer running) or its heartbeat is older than ``STALE_AFTER_S``
(another host, or a frozen process).

Several processes of one run (``accelerate launch``) hold one file each: a live file of the same
rank, or of another world size, means another extraction and is refused.

Only local paths are locked. fsspec URLs (``s3://``, ``gs://``, ``memory://``) have no atomic
create-if-absent that every backend honours, so there the lock is a no-op: do not start two
extractions into one remote store (several processes of one run are safe: each writes only
its own blocks).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import UserError
from actstore.store.sharding import Shard

LOCK_SUFFIX = ".lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
UNREADABLE_GRACE_S = 5.0


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    rank: int
    world_size: int
    started: float

    def describe(self) -> str:
        run = f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else ""
        return f"pid {self.pid} on {self.host}{run}"


def local_path(url: str) -> Path | None:
    """The local file system path of a store URL, or None for a remote (fsspec) URL."""
    text = str(url)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return None if "://" in text else Path(text)


def lock_dir(url: str) -> Path | None:
    path = local_path(url)
    return None if path is None else path.with_name(path.name + LOCK_SUFFIX)


class ExtractionLock:
    """``with ExtractionLock(url, shard):`` holds the store for this process until the block ends."""

    def __init__(self, url: str, shard: Shard = Shard(), *, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):
        self.url, self.shard = str(url), shard
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.directory = lock_dir(url)
        self.path = None if self.directory is None else self.directory / f"rank{shard.rank}-of{shard.world_size}.json"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._seen_main = False
        self._started = time.time()

    def __enter__(self) -> "ExtractionLock":
        if self.directory is not None:
            self._acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            self._refuse_live_conflicts()
            holder = LockHolder(os.getpid(), socket.gethostname(), self.shard.rank, self.shard.world_size, time.time())
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if attempt:  # someone took our rank's file between the check and the create
                    self._refuse_live_conflicts(include_stale=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(asdict(holder), handle)
            self._beat = threading.Thread(target=self._heartbeat, name=f"lock {self.path.name}", daemon=True)
            self._beat.start()
            return

    def _refuse_live_conflicts(self, *, include_stale: bool = False) -> None:
        for path in sorted(self.directory.glob("rank*-of*.json")):
            holder = _read_holder_when_written(path)
            conflicts = holder is None or holder.rank == self.shard.rank or holder.world_size != self.shard.world_size
            if not conflicts:
                continue  # another process of this same run
            if not include_stale and self._is_stale(path, holder):
                path.unlink(missing_ok=True)
                continue
            who = holder.describe() if holder else "an unreadable lock file"
            age = time.time() - _mtime(path)
            raise UserError(f"{self.url}: another extraction is writing this store ({who}, last heartbeat {age:.0f} s ago); "
                            f"wait for it to finish, or delete {path} if that process is gone")

    def _is_stale(self, path: Path, holder: LockHolder | None) -> bool:
        age = time.time() - _mtime(path)
        if holder is None:  # being written right now, or left empty by a process killed while writing it
            return age > UNREADABLE_GRACE_S
        if age > self.stale_after_s:
            return True
        return holder.host == socket.gethostname() and not _pid_running(holder.pid)

    def main_rank_gone(self) -> bool:
        """For another rank waiting on the store's creator (rank 0, or ``Shard.first``): whether that rank of
        this run has stopped (its lock file is stale, or was seen and is now gone). Never True for remote
        stores (no lock files)."""
        if self.directory is None:
            return False
        path = self.directory / f"rank{self.shard.first}-of{self.shard.world_size}.json"
        if not path.exists():
            return self._seen_main
        holder = _read_holder(path)
        if holder is not None and holder.started < self._started - self.stale_after_s:
            return False  # left by an earlier run: this run's rank 0 has not taken it over yet
        self._seen_main = True
        return self._is_stale(path, holder)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
            self.path.unlink(missing_ok=True)
            try:
                self.directory.rmdir()
            except OSError:  # other processes of the run still hold theirs
                pass


def _read_holder_when_written(path: Path) -> LockHolder | None:
    """The holder, once a file just created (empty until its owner writes it) has been written;
    None for a file still unreadable after UNREADABLE_GRACE_S (or gone meanwhile)."""
    while True:
        holder = _read_holder(path)
        if holder is not None or not path.exists() or time.time() - _mtime(path) > UNREADABLE_GRACE_S:
            return holder
        time.sleep(0.05)


def _read_holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, owned by someone else
        return True
    return True
