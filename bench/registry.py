"""The servers and scenarios the benchmark compares.

Adding a server or a scenario is one entry here. Server command templates may use
``{py}`` (bench venv python), ``{bin}`` (its bin directory), ``{bench}`` (this directory),
``{app}`` (``apps:NAME``), ``{port}`` and ``{workers}``; the command must serve in the
foreground until SIGTERM.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MIB = 1024 * 1024
SUBJECT = 'rustwsgi'  # the server under test; every other entry is a peer
APP_LOOP = 'app-loop'  # records of the app called in a loop with no server (bench/apploop.py)


@dataclass(frozen=True)
class Server:
    """One server configuration: a command line template and what it means."""

    name: str
    cmd: str
    note: str
    # Why the server cannot run a scenario with more than one worker process ('' = it can, via {workers}).
    no_workers: str = ''

    def argv(self, py: str, target: str, port: int, workers: int) -> list[str]:
        """The command line serving ``target`` on 127.0.0.1:``port``."""
        bin_dir = str(Path(py).parent)
        text = self.cmd.format(py=py, bin=bin_dir, bench=BENCH, app=target, port=port, workers=workers)
        return shlex.split(text)

    def is_peer(self) -> bool:
        """True for the servers rustwsgi is compared against."""
        return not self.name.startswith(SUBJECT)


@dataclass(frozen=True)
class Scenario:
    """One workload: the app served, the request wrk sends and what a correct answer looks like."""

    name: str
    target: str
    title: str
    path: str = '/'
    body_bytes: int = 0  # > 0: POST with this many bytes
    workers: int = 1
    # True: server and wrk both run unpinned on every CPU (the multi-core case) instead of one core each.
    spread: bool = False
    expect_body: bytes | None = None
    expect_len: int | None = None
    expect_substr: bytes | None = None
    # True: each repetition also times the app called in a loop with no server (bench/apploop.py), the
    # framework's own rate that the Flask and Django targets are measured against.
    app_loop: bool = False
    # wrk connections for this scenario, overriding --conc (the 256-connection latency row).
    conc: int | None = None
    # True: the probe also times the first block of a generator that pauses after it (apps:chunked?pause=S).
    stream_probe: bool = False
    # 'browser': wrk sends a desktop browser's request headers (bench.lua), not only Host.
    headers: str = ''


SCENARIOS: list[Scenario] = [
    Scenario('hello', 'apps:hello', 'hello, 12 B + Content-Length', expect_body=b'Hello, World', app_loop=True),
    Scenario(
        'hello-browser',
        'apps:hello',
        "hello, a browser's 13 request headers",
        headers='browser',
        expect_body=b'Hello, World',
    ),
    Scenario('chunked', 'apps:chunked', 'generator, 4 x 1 KiB, no Content-Length', expect_len=4096, stream_probe=True),
    Scenario('big', 'apps:big', '1 MiB body', expect_len=MIB),
    Scenario('echo', 'apps:echo', 'POST 64 KiB, echo length', body_bytes=65536, expect_body=b'65536'),
    Scenario('flask', 'apps:flask_app', 'Flask JSON', path='/json', expect_substr=b'"message"', app_loop=True),
    Scenario('django', 'apps:django_app', 'Django JSON', path='/json', expect_substr=b'"message"', app_loop=True),
    Scenario('file', 'apps:file_app', '10 MiB file, wsgi.file_wrapper', expect_len=10 * MIB),
    Scenario('file-read', 'apps:file_read_app', '10 MiB file read in Python', expect_len=10 * MIB),
    Scenario('hello-2w', 'apps:hello', 'hello, 2 worker processes', workers=2, expect_body=b'Hello, World'),
    Scenario(
        'hello-2w-2c',
        'apps:hello',
        'hello, 2 workers on both cores, wrk unpinned',
        workers=2,
        spread=True,
        expect_body=b'Hello, World',
    ),
    Scenario('hello-c256', 'apps:hello', 'hello, 256 connections', conc=256, expect_body=b'Hello, World'),
    Scenario('io', 'apps:io_wait', 'waits 1 ms on I/O (time.sleep), 0.1 KiB', expect_substr=b'waited'),
]


def rustwsgi_has_workers(py: str) -> bool:
    """Whether the installed rustwsgi accepts ``--workers`` (read from its ``serve --help``)."""
    bin_dir = Path(py).parent
    out = subprocess.run(  # noqa: S603 - fixed argv, venv binary
        [str(bin_dir / 'rustwsgi'), 'serve', '--help'], capture_output=True, text=True, check=False
    )
    return '--workers' in out.stdout


def servers(py: str) -> list[Server]:
    """Every known server configuration; rustwsgi's depends on the options the installed build has."""
    if rustwsgi_has_workers(py):
        # Passed even for 1 worker, so a default of one worker per CPU cannot change the 1-core setup.
        rustwsgi = Server(
            'rustwsgi', '{bin}/rustwsgi serve {app} --bind 127.0.0.1:{port} --workers {workers}', 'rustwsgi, defaults'
        )
        rustwsgi_t1 = Server(
            'rustwsgi-t1',
            '{bin}/rustwsgi serve {app} --bind 127.0.0.1:{port} --workers {workers} --threads 1',
            'rustwsgi, --threads 1',
        )
    else:
        missing = 'not supported yet: rustwsgi has no --workers option'
        rustwsgi = Server(
            'rustwsgi', '{bin}/rustwsgi serve {app} --bind 127.0.0.1:{port}', 'rustwsgi, defaults', no_workers=missing
        )
        rustwsgi_t1 = Server(
            'rustwsgi-t1',
            '{bin}/rustwsgi serve {app} --bind 127.0.0.1:{port} --threads 1',
            'rustwsgi, --threads 1',
            no_workers=missing,
        )
    return [
        rustwsgi,
        rustwsgi_t1,
        Server(
            'granian',
            '{bin}/granian --interface wsgi --workers {workers} --host 127.0.0.1 --port {port} {app}',
            'granian, WSGI, defaults',
        ),
        Server(
            'granian-bt4',
            '{bin}/granian --interface wsgi --workers {workers} --blocking-threads 4 '
            '--host 127.0.0.1 --port {port} {app}',
            'granian tuned: --blocking-threads 4',
        ),
        Server('fastwsgi', '{py} {bench}/launch.py fastwsgi {app} --port {port} --workers {workers}', 'fastwsgi'),
        Server('bjoern', '{py} {bench}/launch.py bjoern {app} --port {port} --workers {workers}', 'bjoern'),
        Server(
            'gunicorn-gthread',
            '{bin}/gunicorn -w {workers} -k gthread --threads 8 -b 127.0.0.1:{port} {app}',
            'gunicorn gthread worker, 8 threads',
        ),
        Server(
            'waitress',
            '{bin}/waitress-serve --threads=8 --listen=127.0.0.1:{port} {app}',
            'waitress, threads=8',
            no_workers='single process only',
        ),
    ]


DEFAULT_SERVERS = ['rustwsgi', 'granian', 'granian-bt4', 'fastwsgi', 'bjoern', 'gunicorn-gthread', 'waitress']
