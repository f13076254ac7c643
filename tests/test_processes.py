"""Processes, signals and binds: the supervisor and the single-process server, driven through real signals.

Every test starts `python -m rustwsgi serve` as a subprocess and serves apps from `tests/apps/ops.py`; the `pid`
app answers with the serving process id, so a test can tell workers apart. Loops are bounded; waits have deadlines.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import support
from conftest import APPS_DIR, Served

ServeFactory = Callable[..., Served]

TIMEOUT = 10.0
WAIT = 20.0  # deadline for conditions that need a worker to boot or drain
SLOW_STARTED = 'SLOW-REQUEST-STARTED'
NAP_STARTED = 'NAP-STARTED'


# ---- helpers ----


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    """`support.wait_until` with this module's longer default (workers may need a while to boot or drain)."""
    return support.wait_until(condition, what, timeout)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return text.rsplit(')', 1)[1].split()


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != 'Z'


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (the workers of a supervisor)."""
    found = set()
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != 'Z' and int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def get(url: str, path: str = '/') -> requests.Response:
    """One request on a new connection."""
    return requests.get(url + path, timeout=TIMEOUT)


def served_pid(url: str) -> int:
    response = get(url)
    assert response.status_code == 200, response.text
    return int(response.text.split()[0])


def pids_seen(url: str, count: int, attempts: int = 400) -> set[int]:
    """Send requests on new connections until `count` different worker pids answered (bounded)."""
    seen: set[int] = set()
    for _ in range(attempts):
        seen.add(served_pid(url))
        if len(seen) >= count:
            break
    return seen


def wait_for_workers(served: Served, count: int, exclude: set[int] = frozenset()) -> set[int]:
    """Wait until the supervisor has exactly `count` children, none of them in `exclude`."""

    def ready() -> set[int]:
        workers = children(served.proc.pid)
        return workers if len(workers) == count and not workers & exclude else set()

    return wait_until(ready, f'{count} workers (excluding {sorted(exclude)})')  # type: ignore[return-value]


class Hammer:
    """A client thread sending requests on new connections in a bounded loop until stopped; records failures."""

    def __init__(self, url: str, limit: int = 20000) -> None:
        self.url = url
        self.limit = limit
        self.ok = 0
        self.pids: set[int] = set()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            try:
                response = get(self.url)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            if response.status_code != 200:
                self.failures.append(f'{response.status_code} {response.text[:100]}')
                continue
            self.ok += 1
            self.pids.add(int(response.text.split()[0]))

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT * 2)
        assert not self._thread.is_alive(), 'client thread did not stop'

    def wait_for(self, count: int) -> None:
        """Wait until `count` more requests have succeeded."""
        target = self.ok + count
        wait_until(lambda: self.ok >= target or self.failures, f'{count} more successful requests')


def start_slow_request(url: str, seconds: float) -> tuple[threading.Thread, list[object]]:
    """Send a request to the `slow` app in a thread; the result (response or exception) lands in the list."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(requests.get(f'{url}/?seconds={seconds}', timeout=60))
        except requests.RequestException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@dataclass
class Exchange:
    """One request on a new connection as the client saw it: when it ran (monotonic) and how it ended."""

    start: float
    end: float
    status: int | None = None  # the HTTP status; None when no answer came
    pid: int | None = None  # the worker that answered
    error: requests.RequestException | None = None

    def in_flight_at(self, moment: float) -> bool:
        return self.start < moment < self.end


def nap_client(url: str, seconds: float, stop: threading.Event, exchanges: list[Exchange], limit: int = 200) -> None:
    """Send `nap` requests one after another, each on a new connection, until `stop` is set (bounded)."""
    for _ in range(limit):
        if stop.is_set():
            return
        start = time.monotonic()
        try:
            response = requests.get(f'{url}/?seconds={seconds}', headers={'Connection': 'close'}, timeout=TIMEOUT)
        except requests.RequestException as exc:
            exchanges.append(Exchange(start, time.monotonic(), error=exc))
            continue
        end = time.monotonic()
        pid = int(response.text) if response.status_code == 200 and response.text.isdigit() else None
        exchanges.append(Exchange(start, end, response.status_code, pid))


def assert_gone(pids: set[int]) -> None:
    """No process of `pids` is left (they may need a moment to be reaped after the supervisor exits)."""
    wait_until(lambda: not any(alive(pid) for pid in pids), f'processes {sorted(pids)} to be gone', timeout=TIMEOUT)


def stop(served: Served, sig: int = signal.SIGTERM) -> int:
    """Send `sig` and wait for the server to exit; returns its exit status."""
    served.proc.send_signal(sig)
    return served.proc.wait(WAIT + TIMEOUT)


def env_without_settings(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith('RUSTWSGI_')}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(APPS_DIR), env.get('PYTHONPATH', '')]))
    env.update(extra)
    return env


@pytest.fixture
def tmp_socket_dir() -> Iterator[Path]:
    """A short directory under /tmp (unix socket paths are limited to about 100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix='rw-', dir='/tmp'))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def unix_get(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(b'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
        data = b''
        while chunk := sock.recv(65536):
            data += chunk
    return data


# ---- workers ----


def test_workers_serve_and_are_multiprocess(serve: ServeFactory) -> None:
    """-w 2: two worker processes under the supervisor answer, with wsgi.multiprocess True."""
    served = serve('ops:pid', '-w', '2')
    workers = wait_for_workers(served, 2)
    assert pids_seen(served.url, 2) == workers
    assert get(served.url).text.split()[1] == 'True'
    assert f'Listening at: {served.url} (pid: {served.proc.pid}, ' in served.log()
    assert stop(served) == 0
    assert_gone(workers)


def test_single_worker_serves_in_process(serve: ServeFactory) -> None:
    """Without supervisor options one worker serves in the main process, with wsgi.multiprocess False."""
    served = serve('ops:pid')
    assert get(served.url).text == f'{served.proc.pid} False'
    assert children(served.proc.pid) == set()


def test_workers_auto(serve: ServeFactory) -> None:
    """-w auto starts one worker per CPU of the affinity mask."""
    served = serve('ops:pid', '-w', 'auto', '--max-requests', '1000')
    wait_for_workers(served, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize('preload', [False, True])
def test_preload_imports_in_supervisor(serve: ServeFactory, preload: bool) -> None:
    """--preload imports the app in the supervisor before forking; without it each worker imports it."""
    served = serve('ops:imported_by', '-w', '2', *(['--preload'] if preload else []))
    importer, server = (int(part) for part in get(served.url).text.split())
    assert server in children(served.proc.pid)
    assert importer == (served.proc.pid if preload else server)


def test_unloadable_app_stops_supervisor(tmp_path: Path) -> None:
    """Without --preload, workers that cannot import the app make the supervisor exit 1 with one error line."""
    result = subprocess.run(
        [sys.executable, '-m', 'rustwsgi', 'serve', 'ops:missing', '-w', '2', '--bind', '127.0.0.1:0'],
        capture_output=True,
        text=True,
        timeout=WAIT + TIMEOUT,
        env=env_without_settings(),
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot import 'ops:missing'" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == 'rustwsgi: error: the workers could not load the application'


# ---- signals ----


def test_sighup_rolling_reload_loses_no_request(serve: ServeFactory) -> None:
    """SIGHUP under a request loop: new worker pids take over and no request fails."""
    served = serve('ops:pid', '-w', '2')
    old = wait_for_workers(served, 2)
    with Hammer(served.url) as hammer:
        hammer.wait_for(50)
        served.proc.send_signal(signal.SIGHUP)
        new = wait_for_workers(served, 2, exclude=old)
        wait_until(lambda: new <= hammer.pids, 'requests answered by the new workers')
        hammer.wait_for(50)
    assert hammer.failures == []
    assert not new & old
    assert_gone(old)
    assert stop(served) == 0


def test_sigkill_worker_is_replaced(serve: ServeFactory) -> None:
    """SIGKILL one of 2 workers: the service continues and a new worker pid appears."""
    served = serve('ops:pid', '-w', '2')
    workers = wait_for_workers(served, 2)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    with Hammer(served.url) as hammer:
        replaced = wait_for_workers(served, 2, exclude={victim})
        wait_until(lambda: replaced <= hammer.pids, 'requests answered by both workers')
    assert hammer.failures == []
    assert replaced - workers
    assert f'Worker (pid: {victim}) was killed by SIGKILL' in served.log()


def test_sigkill_under_load_loses_only_in_flight_requests(serve: ServeFactory) -> None:
    """SIGKILL one of 2 workers under load: it loses only the requests in flight at the kill, as connection errors.

    8 clients send 0.3 s requests on new connections, so each worker has several in flight at any moment; the kill
    comes right after the victim logged that it started one, so at least one is surely in flight on it. Every failed
    request started before the kill and had not ended at it; none is an HTTP error answer; and every request started
    after the kill succeeds, including those the kernel queued on the dead worker's slot socket, which the supervisor
    keeps open for the replacement.
    """
    served = serve('ops:nap', '-w', '2')
    workers = wait_for_workers(served, 2)
    victim = min(workers)
    stop_clients = threading.Event()
    exchanges: list[Exchange] = []
    clients = [
        threading.Thread(target=nap_client, args=(served.url, 0.3, stop_clients, exchanges), daemon=True)
        for _ in range(8)
    ]
    for client in clients:
        client.start()
    try:

        def answered(pids: set[int], after: float = 0.0) -> dict[int, int]:
            counts = dict.fromkeys(pids, 0)
            for exchange in list(exchanges):
                if exchange.pid in counts and exchange.start > after:
                    counts[exchange.pid] += 1
            return counts

        wait_until(
            lambda: min(answered(workers).values()) >= 3 or any(e.status != 200 for e in list(exchanges)),
            'requests answered by both workers',
        )
        started = f'{NAP_STARTED} {victim}\n'
        before = served.log().count(started)
        wait_until(lambda: served.log().count(started) > before, 'the victim to start a request')
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replacement = wait_for_workers(served, 2, exclude={victim}) - workers
        wait_until(
            lambda: replacement and min(answered(replacement, after=t_kill).values()) >= 3,
            'requests started after the kill answered by the replacement',
        )
    finally:
        stop_clients.set()
        for client in clients:
            client.join(TIMEOUT * 2)
    assert not any(client.is_alive() for client in clients), 'a client thread did not stop'

    def show(exchanges: list[Exchange]) -> str:
        return '\n'.join(
            f'start {e.start - t_kill:+.3f}s end {e.end - t_kill:+.3f}s: {e.status or e.error!r} (pid {e.pid})'
            for e in exchanges
        )

    failed = [e for e in exchanges if e.status != 200]
    in_flight = [e for e in exchanges if e.in_flight_at(t_kill)]
    late = [e for e in exchanges if e.start > t_kill]
    assert failed, f'no request was lost: nothing was in flight on the victim\n{show(in_flight)}'
    # Lost requests are the ones in flight on the victim at the kill, and show up as connection errors only.
    assert all(e.in_flight_at(t_kill) for e in failed), show(failed)
    assert all(
        e.status is None and isinstance(e.error, requests.ConnectionError) and not isinstance(e.error, requests.Timeout)
        for e in failed
    ), show(failed)
    assert len(failed) <= len(in_flight)
    # Requests started after the kill all succeed, served by the survivor and the replacement.
    assert late, 'no request started after the kill'
    assert all(e.status == 200 for e in late), show([e for e in late if e.status != 200])
    assert {e.pid for e in late} <= (workers - {victim}) | replacement
    served.wait_for_log(f'Worker (pid: {victim}) was killed by SIGKILL', timeout=WAIT)


@pytest.mark.parametrize('workers', ['1', '2'])
def test_sigterm_finishes_slow_request(serve: ServeFactory, workers: str) -> None:
    """SIGTERM with a slow request in flight: it completes, the server exits 0 and leaves no process behind."""
    served = serve('ops:slow', '-w', workers)
    pids = children(served.proc.pid) | {served.proc.pid}
    thread, result = start_slow_request(served.url, 1.5)
    served.wait_for_log(SLOW_STARTED, timeout=WAIT)
    pids |= children(served.proc.pid)
    served.proc.send_signal(signal.SIGTERM)
    thread.join(WAIT)
    assert len(result) == 1 and isinstance(result[0], requests.Response), result
    assert result[0].status_code == 200
    assert result[0].text.startswith('done ')
    assert served.proc.wait(WAIT) == 0
    assert 'Shutdown complete' in served.log()
    assert_gone(pids)


@pytest.mark.parametrize('workers', ['1', '2'])
def test_graceful_timeout_cuts_off_slow_request(serve: ServeFactory, workers: str) -> None:
    """A request that outlives --graceful-timeout loses its connection; the server still exits 0, leaving nothing.

    The single process waits for the application code to return (3 s); a worker still in it is killed instead.
    """
    served = serve('ops:slow', '-w', workers, '--graceful-timeout', '0.5')
    thread, result = start_slow_request(served.url, 3 if workers == '1' else 60)
    served.wait_for_log(SLOW_STARTED, timeout=WAIT)
    pids = children(served.proc.pid) | {served.proc.pid}
    assert stop(served) == 0
    thread.join(WAIT)
    assert len(result) == 1 and isinstance(result[0], requests.RequestException), result
    assert 'Graceful timeout (0.5s) passed' in served.log()
    if workers == '2':
        assert 'did not stop within --graceful-timeout; killing it' in served.log()
    assert_gone(pids)


@pytest.mark.parametrize('workers', ['1', '2'])
def test_sigquit_stops_at_once(serve: ServeFactory, workers: str) -> None:
    """SIGQUIT closes connections without waiting for the request in flight; no process is left behind."""
    served = serve('ops:slow', '-w', workers, '--graceful-timeout', '0.5')
    thread, result = start_slow_request(served.url, 3 if workers == '1' else 60)
    served.wait_for_log(SLOW_STARTED, timeout=WAIT)
    pids = children(served.proc.pid) | {served.proc.pid}
    assert stop(served, signal.SIGQUIT) == 0
    thread.join(WAIT)
    assert len(result) == 1 and isinstance(result[0], requests.RequestException), result
    assert 'Received SIGQUIT, shutting down now' in served.log()
    assert_gone(pids)


def test_sigint_to_process_group_is_graceful() -> None:
    """Ctrl-C reaches the supervisor and every worker; the workers still drain, and everything exits 0."""
    cmd = [sys.executable, '-m', 'rustwsgi', 'serve', 'ops:slow', '-w', '2', '--bind', '127.0.0.1:0']
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_without_settings(), start_new_session=True
    )
    served = Served(proc)
    try:
        served.wait_ready()
        thread, result = start_slow_request(served.url, 1.5)
        served.wait_for_log(SLOW_STARTED, timeout=WAIT)
        pids = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        thread.join(WAIT)
        assert len(result) == 1 and isinstance(result[0], requests.Response), result
        assert result[0].status_code == 200
        assert proc.wait(WAIT) == 0
        assert_gone(pids)
    finally:
        served.stop()


def test_max_requests_recycles_without_failures(serve: ServeFactory) -> None:
    """--max-requests with jitter: workers are replaced as they reach it, and no request fails."""
    served = serve('ops:pid', '-w', '2', '--max-requests', '20', '--max-requests-jitter', '5')
    with Hammer(served.url, limit=300) as hammer:
        wait_until(lambda: hammer.ok >= 200 or hammer.failures, '200 requests')
    assert hammer.failures == []
    # 200 requests through 2 workers that each stop after 20 to 25 responses.
    assert len(hammer.pids) >= 8
    assert 'reached --max-requests' in served.log()
    assert stop(served) == 0


def test_max_requests_with_one_worker(serve: ServeFactory) -> None:
    """--max-requests starts the supervisor even with one worker; requests keep succeeding across recycles."""
    served = serve('ops:pid', '--max-requests', '10')
    with Hammer(served.url, limit=100) as hammer:
        wait_until(lambda: hammer.ok >= 40 or hammer.failures, '40 requests')
    assert hammer.failures == []
    assert len(hammer.pids) >= 4
    assert served.proc.pid not in hammer.pids


def test_ttin_ttou_change_worker_count(serve: ServeFactory) -> None:
    """SIGTTIN adds a worker, SIGTTOU removes one; requests keep being served, none fails."""
    served = serve('ops:pid', '-w', '2')
    wait_for_workers(served, 2)
    served.proc.send_signal(signal.SIGTTIN)
    three = wait_for_workers(served, 3)
    assert pids_seen(served.url, 3) == three
    with Hammer(served.url) as hammer:
        hammer.wait_for(20)
        served.proc.send_signal(signal.SIGTTOU)
        two = wait_for_workers(served, 2)
        hammer.wait_for(20)
    assert hammer.failures == []
    assert two < three
    assert pids_seen(served.url, 2) == two
    assert 'Received SIGTTIN, workers: 3' in served.log()
    assert 'Received SIGTTOU, workers: 2' in served.log()


def test_single_process_ignores_reload_signals(serve: ServeFactory) -> None:
    """SIGHUP, SIGTTIN and SIGTTOU neither stop nor suspend the single-process server; it says why."""
    served = serve('ops:pid')
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        served.proc.send_signal(sig)
        served.wait_for_log(f'Ignoring {sig.name}', timeout=WAIT)
    assert served_pid(served.url) == served.proc.pid
    assert stop(served) == 0


# ---- binds ----


@pytest.mark.parametrize('workers', ['1', '2'])
def test_pid_file(serve: ServeFactory, tmp_path: Path, workers: str) -> None:
    """--pid FILE holds the server's (supervisor's) pid while it runs and is removed at exit."""
    pid_file = tmp_path / 'rustwsgi.pid'
    served = serve('ops:pid', '-w', workers, '--pid', str(pid_file))
    assert pid_file.read_text().strip() == str(served.proc.pid)
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o644
    assert stop(served) == 0
    assert not pid_file.exists()


def test_port_in_use_by_another_supervisor_fails(serve: ServeFactory) -> None:
    """SO_REUSEPORT slot sockets do not let a second server share a port another one listens on."""
    served = serve('ops:pid', '-w', '2')
    address = f'127.0.0.1:{served.port}'
    result = subprocess.run(
        [sys.executable, '-m', 'rustwsgi', 'serve', 'ops:pid', '-w', '2', '--bind', address],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env_without_settings(),
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f'rustwsgi: cannot bind {address}: [Errno 98] Address already in use'


@pytest.mark.parametrize(('umask', 'mode'), [(None, 0o777), ('007', 0o770), ('0o077', 0o700)])
def test_unix_socket_mode_and_removal(serve: ServeFactory, tmp_socket_dir: Path, umask: str | None, mode: int) -> None:
    """A unix socket gets mode 0o777 & ~umask (default umask 0), is served by the workers and removed at exit."""
    path = tmp_socket_dir / 'app.sock'
    served = serve('ops:pid', '-w', '2', *(['--umask', umask] if umask else []), bind=f'unix:{path}')
    assert stat.S_IMODE(path.lstat().st_mode) == mode
    workers = wait_for_workers(served, 2)
    # One socket shared by the workers: which of them accepts is up to the kernel.
    response = unix_get(str(path))
    assert response.startswith(b'HTTP/1.1 200'), response[:200]
    assert int(response.split(b'\r\n\r\n', 1)[1].split()[0]) in workers
    assert stop(served) == 0
    assert not path.exists()


def _socket_activated(sock: socket.socket, *args: str) -> Served:
    """Start rustwsgi the way systemd does: the socket as descriptor 3, LISTEN_PID and LISTEN_FDS set."""
    launcher = textwrap.dedent(
        """
        import os, sys
        os.dup2(int(sys.argv[1]), 3)
        os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')
        os.execv(sys.executable, [sys.executable, '-m', 'rustwsgi', 'serve', *sys.argv[2:]])
        """
    )
    cmd = [sys.executable, '-c', launcher, str(sock.fileno()), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_without_settings(), pass_fds=[sock.fileno()]
    )
    served = Served(proc)
    served.wait_ready()
    return served


@pytest.mark.parametrize('workers', ['1', '2'])
def test_systemd_socket_activation(workers: str) -> None:
    """LISTEN_FDS: rustwsgi serves on the socket it was given (descriptor 3) and ignores --bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        served = _socket_activated(sock, 'ops:activation', '-w', workers, '--bind', '127.0.0.1:1')
        try:
            assert served.url == f'http://127.0.0.1:{port}'
            assert 'from systemd socket activation' in served.log()
            expected = wait_for_workers(served, 2) if workers == '2' else {served.proc.pid}
            pid, listen_fds = get(served.url).text.split()
            assert int(pid) in expected
            # The variables are consumed: the application and its children do not see them.
            assert listen_fds == '-'
            assert stop(served) == 0
        finally:
            served.stop()


# ---- reload ----


APP_V1 = """
def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'version one']
"""


def test_reload_restarts_workers_on_change(tmp_path: Path) -> None:
    """--reload: editing the app's file restarts the workers with the new code; a broken edit keeps the old one."""
    module = tmp_path / 'reloadme.py'
    module.write_text(APP_V1)
    cmd = [sys.executable, '-m', 'rustwsgi', 'serve', 'reloadme:app', '--reload', '--bind', '127.0.0.1:0']
    env = env_without_settings(PYTHONDONTWRITEBYTECODE='1')
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    served = Served(proc)
    try:
        served.wait_ready()
        served.wait_for_log('Reloading on changes to Python files in', timeout=WAIT)
        wait_until(lambda: get(served.url).text == 'version one', 'the first version')

        module.write_text(APP_V1 + '\nthis is not python\n')
        served.wait_for_log("cannot import 'reloadme:app'", timeout=WAIT)
        assert get(served.url).text == 'version one'

        module.write_text(APP_V1.replace('version one', 'version two, longer'))
        wait_until(lambda: get(served.url).text == 'version two, longer', 'the edited version')
        assert 'Changed: reloadme.py; reloading' in served.log()
        watcher_and_worker = children(proc.pid)
        assert stop(served) == 0
        assert_gone(watcher_and_worker)
    finally:
        served.stop()


def test_reload_without_watchfiles_is_one_line() -> None:
    """--reload without the watchfiles package fails with one clear line, exit 1."""
    script = (
        "import sys; sys.modules['watchfiles'] = None; from rustwsgi.cli import main; "
        "sys.exit(main(['serve', 'ops:pid', '--reload', '--bind', '127.0.0.1:0']))"
    )
    result = subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env_without_settings(),
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'rustwsgi: error: --reload needs the watchfiles package: pip install "rustwsgi[reload]"'
    ]


def test_worker_with_a_thread_stuck_past_timeout_is_recycled(serve: ServeFactory) -> None:
    """--timeout answers 504; a thread that stays stuck for another --timeout gets its worker replaced."""
    served = serve('slow:app', '-w', '2', '--timeout', '1', '--graceful-timeout', '1')
    response = requests.get(f'{served.url}/sleep?30', timeout=10)
    assert response.status_code == 504
    served.wait_for_log('recycling worker', timeout=15)
    served.wait_for_log('worker (pid: ', timeout=15)
    log = served.wait_for_log('exits now', timeout=15)
    assert log.count('Booting worker with pid') >= 3, log
    assert requests.get(f'{served.url}/fast', timeout=10).text == 'done'
