"""Launcher for the servers that have no suitable command line of their own.

    python launch.py {bjoern,fastwsgi} MODULE:APP --port PORT [--workers N]

Binds 127.0.0.1 only. SIGTERM keeps its default action (terminate): a Python handler would never run
while bjoern or fastwsgi sit in their C event loops. With ``--workers N`` bjoern forks N-1 copies that
share the listening socket, and fastwsgi uses its own multi-process mode; the runner stops the whole
process group.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def load(target: str) -> Callable[..., Any]:
    """Import ``module:attr``."""
    module_name, _, attr = target.partition(':')
    obj: Any = importlib.import_module(module_name)
    for part in attr.split('.'):
        obj = getattr(obj, part)
    return obj


def run_bjoern(app: Callable[..., Any], port: int, workers: int) -> None:
    """bjoern: single-threaded event loop per process; extra processes share the socket."""
    import bjoern

    bjoern.listen(app, '127.0.0.1', port)
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    bjoern.run()


def run_fastwsgi(app: Callable[..., Any], port: int, workers: int) -> None:
    """fastwsgi: libuv event loop; loglevel 1 = fatal errors only."""
    import fastwsgi

    fastwsgi.server.init(app, '127.0.0.1', port, loglevel=1, workers=workers)
    fastwsgi.server.run()


RUNNERS = {'bjoern': run_bjoern, 'fastwsgi': run_fastwsgi}


def main() -> None:
    """Parse the command line and serve until terminated."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('server', choices=sorted(RUNNERS))
    p.add_argument('app')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--workers', type=int, default=1)
    a = p.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    RUNNERS[a.server](load(a.app), a.port, a.workers)


if __name__ == '__main__':
    main()
