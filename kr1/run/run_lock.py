"""One run per output directory: an OS file lock held for the driver's lifetime.

    lock = RunLock.acquire(output_dir)     # RunLockedError (one line naming the holder) if another run holds it
    ...
    lock.release()                         # or let the process end: the kernel drops the lock

The lock is `flock` on `<output_dir>/.kr1.lock`, so a killed driver never leaves a stale
lock behind, and two drivers on one machine (two `python -m kr1.driver`, or two
`ray job submit` drivers on one head node) cannot write into one directory. The file
records who holds it (host, pid, start time, command) for the second run's message.
`flock` is not reliable across machines on every network file system: give runs on
different nodes different output directories.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from kr1.errors import UserError, writes_to

LOCK_FILE = ".kr1.lock"


class RunLockedError(UserError):
    """Another run writes into this output directory (one-line message naming it)."""


class RunLock:
    def __init__(self, path: Path, handle: int) -> None:
        self.path, self._fd = path, handle

    @classmethod
    def acquire(cls, output_dir: Path) -> "RunLock":
        """Create `output_dir` if needed and lock it, or raise naming the run that holds it."""
        output_dir = Path(output_dir)
        path = output_dir / LOCK_FILE
        with writes_to("the run's lock file", output_dir):
            output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(f"trainer.output_dir {output_dir} is in use by another kr1 run ({holder}): "
                                 "give this run another trainer.output_dir, or stop that one") from None
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock; the record stays, harmless
            self._fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, as its record says (written right after it was taken)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"host {record['host']}, pid {record['pid']}, started {record['started']}"
    except (ValueError, KeyError, OSError):
        return "its record is not written yet"
