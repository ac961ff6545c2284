"""One writer per run folder: an OS file lock held while a process writes the folder.

`genlab train`, `resume`, `fit-prior` and `lab` hold an exclusive lock on `.genlab.lock` in the
folder they write; a second writer is refused with one line naming the first one's PID, which
the holder writes into the lock file. The lock is the OS's own, taken through the `filelock`
package on a descriptor we open ourselves (`flock` on Linux and macOS, `LockFileEx` on
Windows), so the OS releases it when its holder exits, however it exits, and a lock left by a
killed process never blocks. Readers (`sample`, `eval`, `plot`, `encode`) take no lock: every
file is replaced atomically, so they see a whole file.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

with warnings.catch_warnings():  # a Unix without fcntl: filelock warns at import; _NO_LOCKS below says what we do
    warnings.filterwarnings("ignore", "only soft file lock is available")
    from filelock import lock_descriptor

from .errors import RunFolderError

LOCK_FILE = ".genlab.lock"
# O_NOFOLLOW (Linux, macOS): a received folder's lock file linked to one of yours is never
# written through. Windows has no such flag (and making links there needs extra rights).
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
# Windows locks byte 0 for real (other processes cannot read it), so the PID is written after it.
_PID_OFFSET = 1
# A file system or OS without file locks: the folder is written unlocked rather than not at all.
_NO_LOCKS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


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
                fd = os.open(path, _OPEN_FLAGS, 0o644)
            except OSError as e:
                raise RunFolderError(f"cannot write to {self.run_dir}: {e.strerror} ({LOCK_FILE})") from None
            try:
                locked = lock_descriptor(fd, blocking=False)
            except OSError as e:
                if e.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise RunFolderError(f"cannot lock {path}: {e.strerror or e}") from None
                locked = True  # no locks here: nothing to wait for, write as before locks existed
            if not locked:
                holder = "".join(c for c in _read_at(fd, _PID_OFFSET, 32).decode("ascii", "replace") if c.isdigit()) or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"{self.run_dir} is being written by another genlab process (PID {holder}): "
                    "wait for it to finish or stop it, then try again"
                )
            try:  # the file we locked may have been removed by a holder finishing just now
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"\n{os.getpid()}\n".encode())  # at offset 0 of the emptied file: the PID at _PID_OFFSET
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Removed while still held (POSIX), so a process waiting to lock it retries on a fresh
        # file; Windows refuses to remove an open file, and the next writer reuses it.
        try:
            os.unlink(self.run_dir / LOCK_FILE)
        except OSError:
            pass
        os.close(self._fd)  # releases the lock
        self._fd = None


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """lseek + read: os.pread/pwrite do not exist on Windows."""
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)
    except OSError:  # the holder's byte range (Windows) or a vanished file: no PID to show
        return b""
