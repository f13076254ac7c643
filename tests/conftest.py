"""Shared fixtures: a real `rustwsgi serve` subprocess on 127.0.0.1:0 and a raw-socket client."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APPS_DIR = Path(__file__).parent / 'apps'
LISTENING = re.compile(r'Listening at: (\S+)')
STARTUP_TIMEOUT = 20.0


class Served:
    """A running `rustwsgi serve` process and what it printed so far."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._ready = threading.Event()
        self.address = ''
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode('utf-8', 'replace')
            self._lines.append(line)
            match = LISTENING.search(line)
            if match and not self._ready.is_set():
                self.address = match.group(1)
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> None:
        if not self._ready.wait(STARTUP_TIMEOUT) or not self.address:
            self.stop()
            raise RuntimeError(f'server did not start:\n{self.log()}')

    @property
    def url(self) -> str:
        return self.address

    @property
    def host(self) -> str:
        return self.address.split('//', 1)[1].rsplit(':', 1)[0].strip('[]')

    @property
    def port(self) -> int:
        return int(self.address.rsplit(':', 1)[1])

    def log(self) -> str:
        return ''.join(self._lines)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until `text` appears in the server's stderr and return the whole log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return self.log()
            time.sleep(0.02)
        raise AssertionError(f'{text!r} not in server log:\n{self.log()}')

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


def start_server(target: str, *args: str, env: dict[str, str] | None = None, bind: str = '127.0.0.1:0') -> Served:
    """Start `python -m rustwsgi serve TARGET` and wait for its Listening line."""
    full_env = dict(os.environ)
    full_env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(APPS_DIR), full_env.get('PYTHONPATH', '')]))
    full_env.update(env or {})
    cmd = [sys.executable, '-m', 'rustwsgi', 'serve', target, '--bind', bind, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env)
    served = Served(proc)
    served.wait_ready()
    return served


@pytest.fixture
def serve() -> Iterator:
    """Factory fixture: `serve('module:app', '--threads', '2')` returns a running `Served`."""
    started: list[Served] = []

    def _serve(target: str, *args: str, env: dict[str, str] | None = None, bind: str = '127.0.0.1:0') -> Served:
        served = start_server(target, *args, env=env, bind=bind)
        started.append(served)
        return served

    yield _serve
    for served in started:
        served.stop()


def raw_request(port: int, data: bytes, timeout: float = 5.0, host: str = '127.0.0.1') -> bytes:
    """Send raw bytes, half-close nothing, and read until the server closes the connection or `timeout` passes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b''.join(chunks)


@pytest.fixture
def raw() -> object:
    """The raw-socket client, as a fixture for tests that prefer injection."""
    return raw_request
