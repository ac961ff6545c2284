"""One writer per run folder: an OS file lock held while a process writes the folder.

`genlab train`, `resume`, `fit-prior` and `lab` hold an exclusive `flock` on `.genlab.lock` in
the folder they write; a second writer is refused with one line naming the first one's PID,
which the holder writes into the lock file. The OS releases the lock when its holder exits,
however it exits, so a lock left by a killed process never blocks. Readers (`sample`, `eval`,
`plot`, `encode`) take no lock: every file is replaced atomically, so they see a whole file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import RunFolderError

LOCK_FILE = ".genlab.lock"


class RunFolderLock:
    """`with RunFolderLock(run_dir):` holds the folder's lock, or raises RunFolderError naming
    the holder's PID. A folder that does not exist yet is locked by `acquire()` once it is made
    (the block releases it either way)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        if self.run_dir.is_dir():
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            return
        path = self.run_dir / LOCK_FILE
        while True:
            try:
                # O_NOFOLLOW: a received folder's lock file linked to one of yours is never truncated
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise RunFolderError(f"cannot write to {self.run_dir}: {e.strerror} ({LOCK_FILE})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = "".join(c for c in os.pread(fd, 32, 0).decode("ascii", "replace") if c.isdigit()) or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"{self.run_dir} is being written by another genlab process (PID {holder}): "
                    "wait for it to finish or stop it, then try again"
                ) from None
            try:  # the file we locked may have been removed by a holder finishing just now
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Removed while still held, so a process waiting to lock it retries on a fresh file.
        try:
            os.unlink(self.run_dir / LOCK_FILE)
        except OSError:
            pass
        os.close(self._fd)  # releases the lock
        self._fd = None
