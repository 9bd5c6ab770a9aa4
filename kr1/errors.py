"""The error type users can fix, and how every command reports it: one line on stderr, exit status 2.

    if __name__ == "__main__":
        run_cli(main)

Configuration, data, index, plan and cluster errors derive from `UserError` and already
name the file, row or key; printing them without a traceback is what makes them readable.
Anything else is a bug and keeps its traceback. This module imports nothing of kr1, so
every layer can raise a `UserError` without depending on the commands.
"""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input or setup that the user can fix; the message is one line naming the file, row or key."""


def run_cli(main: Callable[[], None]) -> None:
    """Call `main`; report a user error (or a missing file) as `error: <message>` and exit 2."""
    try:
        main()
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
