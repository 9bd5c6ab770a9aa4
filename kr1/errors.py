"""The error type users can fix, and how every command reports it: one line on stderr, exit status 2.

    if __name__ == "__main__":
        run_cli(main)

Configuration, data, index, plan and cluster errors derive from `UserError` and already
name the file, row or key; printing them without a traceback is what makes them readable.
Anything else is a bug and keeps its traceback. This module imports nothing of kr1, so
every layer can raise a `UserError` without depending on the commands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator


class UserError(Exception):
    """Bad input or setup that the user can fix; the message is one line naming the file, row or key."""


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of an error's text, stripped (libraries append context on further lines); an
    exception with no text gives its type's name."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""


def described(error: BaseException) -> str:
    """'Type: first line' of an exception (just 'Type' when it has no text): a foreign error on one line."""
    line = first_line(error)
    return line if line == type(error).__name__ else f"{type(error).__name__}: {line}"


class StopRequested(KeyboardInterrupt):
    """SIGTERM (`ray job stop`, a scheduler taking the node back): the command stops as on Ctrl-C, closing what
    it started on the way out."""


def _request_stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop at a time: a second SIGTERM must not cut the clean-up
    raise StopRequested()


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises StopRequested in the main thread. Called after ray.init, whose own handler
    prints a native stack and exits on the spot."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _request_stop)


class WriteError(UserError):
    """A file or directory that could not be written (full disk, read-only, permissions): names the
    path and the reason."""


@contextlib.contextmanager
def writes_to(what: str, path: Path | str, after: str = "", probe: Path | str | None = None) -> Iterator[None]:
    """Turn a failed write of the block into a one-line WriteError:
    `cannot write <what> in <path>: [Errno 28] No space left on device<after>`.

    The OSError may come from the block, from inside a Ray actor, or from a rank of a torch distributed
    checkpoint; where a writer hid it (torch.save on a full disk raises "unexpected pos"), a small write
    into `probe` (default `path`), made while the failed write's data still fills the disk, finds it."""
    try:
        yield
    except Exception as e:
        cause = _os_error(e) or _probe(Path(probe or path))
        if cause is None:
            raise
        reason = f"[Errno {cause.errno}] {os.strerror(cause.errno)}" if cause.errno else str(cause)
        raise WriteError(f"cannot write {what} in {path}: {reason}{after}") from None


def _probe(directory: Path) -> OSError | None:
    """The error a 64 KiB write into `directory` meets now, or None when it can be written."""
    target = directory / f".kr1-write-probe-{os.getpid()}"
    try:
        with open(target, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e
    finally:
        with contextlib.suppress(OSError):
            target.unlink()
    return None


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: itself, a Ray task's cause (RayTaskError(OSError)), or one a rank reported
    to torch.distributed.checkpoint (CheckpointException.failures: rank -> (exception, traceback))."""
    cause = getattr(e, "cause", None) or e
    if isinstance(cause, OSError):
        return cause
    for failure in (getattr(cause, "failures", None) or {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, BaseException) and (found := _os_error(inner)) is not None:
            return found
    return None


def run_cli(main: Callable[[], None]) -> None:
    """Call `main`; report a user error as `error: <message>` and exit 2. Any other exception, a
    FileNotFoundError included, is a bug and keeps its traceback: a path the user gave is checked
    where it is opened, and a missing one raised there as a UserError naming it."""
    try:
        main()
    except UserError as e:  # raised in an actor, Ray wraps it with the actor's traceback: print the user's line
        cause = getattr(e, "cause", None)
        print(f"error: {cause if isinstance(cause, UserError) else e}", file=sys.stderr)
        sys.exit(2)
    except StopRequested:  # 128 + SIGTERM, as a process that SIGTERM ended reports
        print("stopped (SIGTERM): everything it started is stopped and its files are whole; a training run "
              "continues from its last checkpoint with trainer.resume=true", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
