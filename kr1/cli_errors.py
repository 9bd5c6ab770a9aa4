"""Turn the errors a user can fix into one line on stderr and exit status 2.

    if __name__ == "__main__":
        run_cli(main)

Configuration, data and index errors already name the file, row or key; printing
them without a traceback is what makes them readable. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from kr1.bm25_index import BM25IndexError
from kr1.config import ConfigError
from kr1.data import DataError
from kr1.plan import PlanError
from kr1.ray_runtime import ClusterConnectError

USER_ERRORS = (ConfigError, DataError, BM25IndexError, FileNotFoundError, ClusterConnectError, PlanError)


def run_cli(main: Callable[[], None]) -> None:
    """Call `main`; report a user error as `error: <message>` and exit 2."""
    try:
        main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
