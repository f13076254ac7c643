"""Helpers shared by the logging, proxy, config-file, plugin and nginx tests (see conftest.py for the fixtures)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from conftest import APPS_DIR

T = TypeVar('T')

WAIT_TIMEOUT = 15.0
POLL_INTERVAL = 0.02


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without rustwsgi settings (RUSTWSGI_*, FORWARDED_ALLOW_IPS), tests/apps on PYTHONPATH, `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith('RUSTWSGI_') and key != 'FORWARDED_ALLOW_IPS'
    }
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(APPS_DIR), env.get('PYTHONPATH', '')]))
    env.update(extra)
    return env


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port that nothing listened on a moment ago (for servers that must be restarted on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def socket_count(pid: int) -> int:
    """The sockets process `pid` has open (descriptors closed while they are listed are skipped)."""
    count = 0
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            count += os.readlink(f'/proc/{pid}/fd/{fd}').startswith('socket:')
        except FileNotFoundError:
            pass
    return count


def wait_until(check: Callable[[], T | None], what: str, timeout: float = WAIT_TIMEOUT) -> T:
    """Poll `check` until it returns something truthy, and return that; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(POLL_INTERVAL)


def read_lines(path: Path) -> list[str]:
    """The complete lines of a file so far (none if it does not exist yet)."""
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        return []
    return text.splitlines()[: text.count('\n')]


def wait_for_lines(path: Path, count: int, timeout: float = WAIT_TIMEOUT) -> list[str]:
    """Wait until `path` holds at least `count` complete lines (access lines are written after the response)."""

    def check() -> list[str] | None:
        lines = read_lines(path)
        return lines if len(lines) >= count else None

    return wait_until(check, f'{count} lines in {path}', timeout)


def wait_for_text(path: Path, text: str, timeout: float = WAIT_TIMEOUT) -> str:
    """Wait until `path` contains `text`; returns the whole file."""

    def check() -> str | None:
        content = '\n'.join(read_lines(path))
        return content if text in content else None

    return wait_until(check, f'{text!r} in {path}', timeout)


def accepting(port: int, host: str = '127.0.0.1') -> bool:
    """True once something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Process:
    """A subprocess whose stdout and stderr are collected line by line by reader threads."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or clean_env(), cwd=cwd
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[bytes] | None, lines: list[str]) -> None:
        assert stream is not None
        for raw in stream:
            lines.append(raw.decode('utf-8', 'replace'))

    def stdout(self) -> str:
        return ''.join(self.stdout_lines)

    def stderr(self) -> str:
        return ''.join(self.stderr_lines)

    def wait_for_stderr(self, text: str) -> str:
        return wait_until(lambda: self.stderr() if text in self.stderr() else None, f'{text!r} on stderr')

    def wait_for_stdout(self, text: str) -> str:
        return wait_until(lambda: self.stdout() if text in self.stdout() else None, f'{text!r} on stdout')

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def rustwsgi_command(target: str, *args: str) -> list[str]:
    """`python -m rustwsgi serve TARGET ARGS...` with the interpreter running the tests."""
    return [sys.executable, '-m', 'rustwsgi', 'serve', target, *args]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m rustwsgi ARGS...` to completion (help, errors, --check-config)."""
    return subprocess.run(
        [sys.executable, '-m', 'rustwsgi', *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
        cwd=cwd,
        check=False,
    )
