"""One measurement: start a server pinned to its core, probe it, load it with wrk, sample /proc, stop it.

Setup, the same for every server: the server runs under ``taskset -c 0`` (every process and thread it
starts inherits the pin), ``wrk -t1`` under ``taskset -c 1``. Before each measurement the runner waits
(bounded) until both cores are quiet, starts the server fresh on a free 127.0.0.1 port, waits until it
answers, checks it with a raw-socket HTTP/1.1 client (status, body, framing, keep-alive, chunked request
body for POST scenarios), warms it up, measures, checks it again, then sends SIGTERM to its process
group (SIGKILL after 5 s).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from registry import APP_LOOP, Scenario

BENCH = Path(__file__).resolve().parent
LUA = BENCH / 'bench.lua'
SERVER_CPU = 0
CLIENT_CPU = 1
CLK_TCK = os.sysconf('SC_CLK_TCK')
PAGE = os.sysconf('SC_PAGE_SIZE')
NOISY_PCT = 10.0  # CPU used by other processes (% of one core) above which a run counts as noisy
QUIET_BUSY = 0.20  # both cores below this busy fraction = quiet enough to start


# ----------------------------------------------------------------------------------------------------------------
# Raw-socket HTTP/1.1 client for readiness and correctness probes
# ----------------------------------------------------------------------------------------------------------------
class ProbeError(Exception):
    """The server's answer could not be parsed or ended early."""


@dataclass
class Response:
    """One parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes
    framing: str  # content-length | chunked | close-delimited
    will_close: bool


class Conn:
    """A blocking client connection to 127.0.0.1 with a read buffer."""

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        self.buf = bytearray()

    def _fill(self, want: int = 65536) -> None:
        chunk = self.sock.recv(max(65536, want))
        if not chunk:
            raise ProbeError(f'connection closed with {len(self.buf)} bytes buffered')
        self.buf += chunk

    def until(self, marker: bytes) -> bytes:
        """Bytes up to ``marker``; the marker is consumed too."""
        while (i := self.buf.find(marker)) < 0:
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[: i + len(marker)]
        return out

    def wait_for(self, marker: bytes) -> None:
        """Reads until ``marker`` is buffered, consuming nothing."""
        while marker not in self.buf:
            self._fill()

    def exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes."""
        while len(self.buf) < n:
            self._fill(n - len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        while chunk := self.sock.recv(65536):
            self.buf += chunk
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def _read_chunked(conn: Conn) -> bytes:
    body = bytearray()
    while size := int(conn.until(b'\r\n').split(b';')[0].strip() or b'0', 16):
        body += conn.exact(size)
        conn.exact(2)
    while conn.until(b'\r\n'):  # trailer fields, up to the empty line
        pass
    return bytes(body)


def read_response(conn: Conn) -> Response:
    """Read one response, framed by Content-Length, chunked coding or connection close."""
    status_line, *lines = conn.until(b'\r\n\r\n').decode('latin-1').split('\r\n')
    version, _, rest = status_line.partition(' ')
    if not version.startswith('HTTP/') or not rest[:3].isdigit():
        raise ProbeError(f'bad status line {status_line!r}')
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(':')
        name = name.strip().lower()
        headers[name] = f'{headers[name]}, {value.strip()}' if name in headers else value.strip()
    connection = headers.get('connection', '').lower()
    will_close = 'close' in connection or (version == 'HTTP/1.0' and 'keep-alive' not in connection)
    status = int(rest[:3])
    if 'chunked' in headers.get('transfer-encoding', '').lower():
        return Response(status, headers, _read_chunked(conn), 'chunked', will_close)
    if 'content-length' in headers:
        return Response(status, headers, conn.exact(int(headers['content-length'])), 'content-length', will_close)
    return Response(status, headers, conn.rest(), 'close-delimited', True)


def build_request(port: int, sc: Scenario, chunked_body: bool = False) -> bytes:
    """The scenario's request (GET, or POST with ``body_bytes`` bytes, optionally chunked)."""
    method = 'POST' if sc.body_bytes else 'GET'
    head = f'{method} {sc.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench-probe\r\n'
    body = b'a' * sc.body_bytes
    if body and chunked_body:
        q = max(1, len(body) // 4)
        payload = b''.join(b'%x\r\n%s\r\n' % (len(body[i : i + q]), body[i : i + q]) for i in range(0, len(body), q))
        head += 'Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n'
        return head.encode() + b'\r\n' + payload + b'0\r\n\r\n'
    if body:
        head += f'Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n'
    return head.encode() + b'\r\n' + body


def exchange(port: int, requests: list[bytes], timeout: float = 10.0) -> list[tuple[Response, bool]]:
    """Send requests one after another, on one connection while the server keeps it open.

    Returns (response, sent on a reused connection) pairs."""
    out = []
    conn: Conn | None = None
    try:
        for req in requests:
            reused = conn is not None
            if conn is None:
                conn = Conn(port, timeout)
            conn.sock.sendall(req)
            resp = read_response(conn)
            out.append((resp, reused))
            if resp.will_close:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return out


def check(sc: Scenario, resp: Response) -> str | None:
    """What is wrong with a response to the scenario's request, or None."""
    if resp.status != 200:
        return f'status {resp.status}'
    if sc.expect_body is not None and resp.body != sc.expect_body:
        return f'body {resp.body[:40]!r} != {sc.expect_body!r}'
    if sc.expect_len is not None and len(resp.body) != sc.expect_len:
        return f'body length {len(resp.body)} != {sc.expect_len}'
    if sc.expect_substr is not None and sc.expect_substr not in resp.body:
        return f'body {resp.body[:60]!r} lacks {sc.expect_substr!r}'
    return None


PROBE_ERRORS = (OSError, ProbeError, ValueError)
PROBE_PAUSE = 0.1  # seconds before the probe's third request
STREAM_PAUSE = 0.3  # seconds the streaming probe's generator sleeps after its first block


def first_block_delay(sc: Scenario, port: int) -> float:
    """Seconds until the first block of a generator body arrives when the app pauses after yielding it
    (``apps:chunked?pause=S``). PEP 3333: a server must not hold a block back while the app produces the next."""
    conn = Conn(port, 10.0)
    try:
        head = f'GET {sc.path}?pause={STREAM_PAUSE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n'
        started = time.monotonic()
        conn.sock.sendall(head.encode())
        conn.until(b'\r\n\r\n')
        conn.wait_for(b'x')  # the body is all x; a chunk size line has none
        return time.monotonic() - started
    finally:
        conn.close()


def probe(sc: Scenario, port: int) -> dict[str, Any]:
    """Two identical requests on one connection, and a third on a new one after a pause (an app can tell then
    what the server did after the first two, such as calling their close()); for POST scenarios also a chunked
    request body."""
    res: dict[str, Any] = {}
    req = build_request(port, sc)
    try:
        (r1, _), (r2, reused) = exchange(port, [req, req])
        res.update(status=r1.status, framing=r1.framing, keepalive=reused, server_header=r1.headers.get('server', ''))
        time.sleep(PROBE_PAUSE)
        ((r3, _),) = exchange(port, [req])
        issues = {r.headers['x-wsgi-issues'] for r in (r1, r2, r3) if r.headers.get('x-wsgi-issues')}
        if issues:
            res['wsgi_issues'] = '; '.join(sorted(issues))
        err = check(sc, r1) or check(sc, r2) or check(sc, r3)
        res['ok'] = err is None
        if err:
            res['error'] = err
    except PROBE_ERRORS as e:
        res.update(ok=False, error=f'{type(e).__name__}: {e}')
    if sc.stream_probe:
        try:
            res['first_block_ms'] = round(1000 * first_block_delay(sc, port), 1)
        except PROBE_ERRORS as e:
            res['stream_error'] = f'{type(e).__name__}: {e}'
    if sc.body_bytes:
        try:
            ((r, _),) = exchange(port, [build_request(port, sc, chunked_body=True)])
            err = check(sc, r)
        except PROBE_ERRORS as e:
            err = f'{type(e).__name__}: {e}'
        res['chunked_request_ok'] = err is None
        if err:
            res['chunked_request_error'] = err
    return res


# ----------------------------------------------------------------------------------------------------------------
# /proc
# ----------------------------------------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, 'rb') as f:
            return f.read().decode('latin-1')
    except OSError:
        return ''


def _stat_fields(pid: int) -> list[str] | None:
    s = _read(f'/proc/{pid}/stat')
    return s[s.rfind(')') + 2 :].split() if s else None  # fields from #3 (state) on


def scan_procs() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, utime+stime ticks, start time ticks) for every process."""
    out = {}
    for d in os.listdir('/proc'):
        if d.isdigit() and (f := _stat_fields(int(d))):
            out[int(d)] = (int(f[1]), int(f[11]) + int(f[12]), int(f[19]))
    return out


def process_tree(root: int, snap: dict[int, tuple[int, int, int]]) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in snap.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_bytes(pids: list[int]) -> int:
    """Summed resident set size of the processes."""
    return sum(int(s.split()[1]) * PAGE for p in pids if (s := _read(f'/proc/{p}/statm')))


def cpu_ticks(pids: list[int]) -> int:
    """Summed utime + stime of the processes, in clock ticks."""
    return sum(int(f[11]) + int(f[12]) for p in pids if (f := _stat_fields(p)))


def cpu_busy() -> dict[int, int]:
    """Busy ticks per CPU from /proc/stat (everything but idle and iowait)."""
    out = {}
    for line in _read('/proc/stat').splitlines():
        if line.startswith('cpu') and line[3:4].isdigit():
            name, *v = line.split()
            ticks = [int(x) for x in v]
            out[int(name[3:])] = sum(ticks[:8]) - ticks[3] - ticks[4]
    return out


def quiet_gate(max_wait: float) -> dict[str, float]:
    """Wait (at most ``max_wait`` s) until every CPU is less than QUIET_BUSY busy over half a second."""
    t0 = time.monotonic()
    while True:
        a = cpu_busy()
        time.sleep(0.5)
        b = cpu_busy()
        busiest = max(((b[c] - a[c]) / (0.5 * CLK_TCK) for c in b), default=0.0)
        waited = time.monotonic() - t0
        if busiest < QUIET_BUSY or waited >= max_wait:
            return {'pre_busy_max': round(busiest, 2), 'waited_s': round(waited, 1)}
        time.sleep(1.0)


def uptime_ticks() -> float:
    """Seconds since boot, in clock ticks."""
    return float((_read('/proc/uptime') or '0').split()[0]) * CLK_TCK


class ForeignMeter:
    """CPU used by other user-space processes (other users of the machine) during the measured window.

    Kernel threads are left out (they do work for our own sockets); processes living less than a scan
    interval are missed, so this is a lower bound."""

    def __init__(self) -> None:
        self.t0 = uptime_ticks()
        self.base: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def update(self, snap: dict[int, tuple[int, int, int]], exclude: set[int]) -> None:
        """Account for one /proc snapshot."""
        for pid, (ppid, ticks, start) in snap.items():
            if pid in exclude or 2 in (pid, ppid):
                continue
            self.base.setdefault(pid, 0 if start >= self.t0 else ticks)
            self.last[pid] = ticks

    def ticks(self) -> int:
        """Foreign CPU ticks so far."""
        return sum(self.last[p] - self.base[p] for p in self.last)

    def hogs(self, n: int = 3) -> list[str]:
        """The ``n`` biggest foreign consumers, as ``comm:centiseconds``."""
        top = sorted(((self.last[p] - self.base[p], p) for p in self.last), reverse=True)[:n]
        return [f'{_read(f"/proc/{p}/comm").strip() or "?"}:{100 * t // CLK_TCK}cs' for t, p in top if t > 0]


class TreeSampler:
    """Tracks the server's process tree: peak summed RSS and, once armed, foreign CPU use."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.me = os.getpid()
        self.pids = process_tree(root, scan_procs())
        self.peak = rss_bytes(self.pids)
        self.meter: ForeignMeter | None = None
        self.last_scan = time.monotonic()

    def rescan(self, extra: set[int] | None = None) -> None:
        """Re-read the process tree (children come and go) and feed the foreign meter."""
        snap = scan_procs()
        self.pids = process_tree(self.root, snap)
        if self.meter is not None:
            self.meter.update(snap, set(self.pids) | {self.me} | (extra or set()))
        self.last_scan = time.monotonic()
        self.peak = max(self.peak, rss_bytes(self.pids))

    def arm(self) -> None:
        """Start counting foreign CPU from now."""
        self.meter = ForeignMeter()
        self.rescan()

    def __call__(self, wrk_pid: int) -> None:
        """One sample (called every 0.2 s while wrk runs); the tree is rescanned every second."""
        if time.monotonic() - self.last_scan > 1.0:
            self.rescan({wrk_pid})
        self.peak = max(self.peak, rss_bytes(self.pids))


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------
# Server life cycle and wrk
# ----------------------------------------------------------------------------------------------------------------
def cpu_list(sc: Scenario, cpu: int) -> str:
    """The CPUs a process of scenario ``sc`` may use: ``cpu`` alone, or every CPU when the scenario spreads."""
    return f'0-{os.cpu_count() - 1}' if sc.spread else str(cpu)


def start_server(argv: list[str], log: IO[bytes], sc: Scenario) -> subprocess.Popen[bytes]:
    """Start the server pinned to SERVER_CPU (unless the scenario spreads), in its own process group, with bench/
    on PYTHONPATH."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(BENCH), env.get('PYTHONPATH')]))
    return subprocess.Popen(  # noqa: S603 - argv from the registry
        ['taskset', '-c', cpu_list(sc, SERVER_CPU), *argv],  # noqa: S607
        cwd=BENCH,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(proc: subprocess.Popen[bytes], sc: Scenario, port: int, timeout: float) -> str | None:
    """None once the server answers a request, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f'exited with {proc.returncode} during startup'
        try:
            exchange(port, [build_request(port, sc)], timeout=2.0)
            return None
        except PROBE_ERRORS:
            time.sleep(0.1)
    return f'not answering after {timeout:.0f}s'


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_server(proc: subprocess.Popen[bytes], grace: float = 5.0) -> dict[str, Any]:
    """SIGTERM to the process group, SIGKILL after ``grace`` seconds; stragglers of the group are killed."""
    if proc.poll() is not None:
        return {'stop': 'already-exited', 'exit_code': proc.returncode}
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        how = 'sigterm'
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        how = 'sigkill'
    _killpg(proc.pid, signal.SIGKILL)  # workers that outlive their master
    return {'stop': how, 'exit_code': proc.returncode}


def wrk_command(port: int, sc: Scenario, conc: int, seconds: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of wrk loading scenario ``sc`` on ``port``, pinned to CLIENT_CPU (unless
    the scenario spreads)."""
    wrk = shutil.which('wrk') or 'wrk'
    env = dict(os.environ, WRK_BODY_BYTES=str(sc.body_bytes), WRK_HEADERS=sc.headers)
    argv = ['taskset', '-c', cpu_list(sc, CLIENT_CPU), wrk, '-t1', f'-c{conc}', f'-d{seconds}s', '--latency']
    argv += ['--timeout', '10s', '-s', str(LUA), f'http://127.0.0.1:{port}{sc.path}']
    return argv, env


def run_wrk(
    port: int, sc: Scenario, conc: int, seconds: int, sampler: Callable[[int], None]
) -> tuple[int, str, dict[str, Any] | None, float]:
    """Run wrk (see ``wrk_command``); returns (exit code, output, WRKJSON stats, wrk CPU seconds)."""
    argv, env = wrk_command(port, sc, conc, seconds)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as p:  # noqa: S603
        assert p.stdout is not None  # noqa: S101 - stdout=PIPE
        os.set_blocking(p.stdout.fileno(), False)
        chunks: list[bytes] = []
        while True:  # taskset execs wrk, so wait4 on this pid yields wrk's own CPU time
            sampler(p.pid)
            chunks.append(p.stdout.read() or b'')
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.2)
        p.returncode = os.waitstatus_to_exitcode(status)
        os.set_blocking(p.stdout.fileno(), True)
        chunks.append(p.stdout.read())
    text = b''.join(chunks).decode('utf-8', 'replace')
    return p.returncode, text, wrk_stats(text), usage.ru_utime + usage.ru_stime


def wrk_stats(text: str) -> dict[str, Any] | None:
    """The figures bench.lua prints in wrk's output (its ``WRKJSON`` line), if any."""
    return next((json.loads(line[8:]) for line in text.splitlines() if line.startswith('WRKJSON ')), None)


# ----------------------------------------------------------------------------------------------------------------
# One measurement
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Opts:
    """Timing of a measurement."""

    duration: int  # wrk takes whole seconds
    warmup: int
    max_wait: float
    logdir: Path
    start_timeout: float = 30.0


def _load_figures(rec: dict[str, Any], stats: dict[str, Any], srv_ticks: int) -> list[str]:
    """Turn wrk's summary into the record's figures; returns issues seen."""
    issues = []
    secs = stats['duration_us'] / 1e6
    n = stats['requests']
    rec.update(
        requests=n,
        rps=round(n / secs, 1),
        mib_s=round(stats['bytes'] / secs / 2**20, 2),
        p50_ms=round(stats['p50_us'] / 1000, 3),
        p99_ms=round(stats['p99_us'] / 1000, 3),
        lat_max_ms=round(stats['lat_max_us'] / 1000, 3),
        non2xx=stats['err_status'],
        sock_err={k[4:]: stats[k] for k in ('err_connect', 'err_read', 'err_write', 'err_timeout')},
    )
    if n:
        rec['cpu_us_per_req'] = round(1e6 * srv_ticks / CLK_TCK / n, 1)
    else:
        issues.append('no responses')
    if stats['err_status']:
        issues.append(f'non-2xx/3xx: {stats["err_status"]}')
    errors = {k: v for k, v in rec['sock_err'].items() if v}
    if errors:
        msg = 'socket errors: ' + ', '.join(f'{k}={v}' for k, v in errors.items())
        # wrk counts every response delimited by connection close as a read error
        if rec.get('probe', {}).get('framing') == 'close-delimited' and set(errors) == {'read'}:
            msg += ' (close-delimited responses; wrk counts each as an error)'
        issues.append(msg)
    return issues


def _probe_issues(pr: dict[str, Any]) -> list[str]:
    issues = []
    if not pr['ok']:
        issues.append(f'probe: {pr.get("error")}')
    if pr.get('wsgi_issues'):
        issues.append(f'app reported: {pr["wsgi_issues"]}')
    if pr.get('stream_error'):
        issues.append(f'streaming probe: {pr["stream_error"]}')
    if pr.get('first_block_ms', 0) >= 900 * STREAM_PAUSE:
        # One wording for every run, so a cell's notes name it once (the delay itself is in the probe record).
        issues.append(
            f'first block held until the generator ended (app paused {STREAM_PAUSE} s after it; PEP 3333: a block '
            'must not wait for the next)'
        )
    if not pr.get('chunked_request_ok', True):
        issues.append(f'chunked request body: {pr.get("chunked_request_error")}')
    return issues


def _under_load(proc: subprocess.Popen[bytes], sc: Scenario, port: int, conc: int, opts: Opts, rec: dict) -> list[str]:
    """Probe, warm up, measure and probe again a running server; fills ``rec``, returns issues."""
    err = wait_ready(proc, sc, port, opts.start_timeout)
    if err:
        return [f'startup: {err}']
    rec['probe'] = probe(sc, port)
    issues = _probe_issues(rec['probe'])
    sampler = TreeSampler(proc.pid)
    if opts.warmup > 0:
        run_wrk(port, sc, conc, opts.warmup, sampler)
    sampler.arm()
    assert sampler.meter is not None  # noqa: S101 - armed above
    ticks0, t0 = cpu_ticks(sampler.pids), time.monotonic()
    rc, text, stats, wrk_cpu = run_wrk(port, sc, conc, opts.duration, sampler)
    elapsed = time.monotonic() - t0
    sampler.rescan()
    srv_ticks = cpu_ticks(sampler.pids) - ticks0  # (a child that exited mid-run loses its ticks)
    rec['foreign_cpu_pct'] = round(100 * sampler.meter.ticks() / CLK_TCK / elapsed, 1)
    rec.update(
        foreign_top=sampler.meter.hogs(),
        noisy=rec['foreign_cpu_pct'] > NOISY_PCT,
        peak_rss_mb=round(sampler.peak / 2**20, 1),
        procs=len(sampler.pids),
        server_cpu_pct=round(100 * srv_ticks / CLK_TCK / elapsed, 1),
        wrk_cpu_pct=round(100 * wrk_cpu / elapsed, 1),
    )
    if rc != 0 or stats is None:
        issues.append(f'wrk rc={rc}: {text.strip()[-300:]}')
    else:
        issues += _load_figures(rec, stats, srv_ticks)
    if proc.poll() is not None:
        issues.append(f'server died during load (exit {proc.returncode})')
        return issues
    try:
        ((r, _),) = exchange(port, [build_request(port, sc)], timeout=5)
        if e := check(sc, r):
            issues.append(f'post-load probe: {e}')
    except PROBE_ERRORS as e:
        issues.append(f'post-load probe failed: {type(e).__name__}: {e}')
    return issues


FATAL = ('server died', 'post-load', 'startup', 'wrk rc', 'no responses')


def measure(name: str, argv_for: Callable[[int], list[str]], sc: Scenario, conc: int, rep: int, opts: Opts) -> dict:
    """One complete measurement of server ``name`` on scenario ``sc``; returns its record."""
    rec: dict[str, Any] = {
        'ts': dt.datetime.now().isoformat(timespec='seconds'),
        'server': name,
        'scenario': sc.name,
        'conc': conc,
        'rep': rep,
        'duration_s': opts.duration,
    }
    rec.update(quiet_gate(opts.max_wait))
    port = free_port()
    argv = argv_for(port)
    rec['cmd'] = ' '.join(argv)
    with (opts.logdir / f'{name}.{sc.name}.r{rep}.log').open('wb') as log:
        proc = start_server(argv, log, sc)
        try:
            issues = _under_load(proc, sc, port, conc, opts, rec)
        finally:
            rec.update(stop_server(proc))
    if rec['stop'] == 'sigkill':
        issues.append('did not stop on SIGTERM within 5s')
    rec['issues'] = issues
    rec['ok'] = (
        bool(rec.get('rps')) and rec.get('probe', {}).get('ok', False) and not any(i.startswith(FATAL) for i in issues)
    )
    return rec


# ----------------------------------------------------------------------------------------------------------------
# The application alone
# ----------------------------------------------------------------------------------------------------------------
def app_loop(sc: Scenario, rep: int, opts: Opts) -> dict:
    """The scenario's app called in a loop on the server's core, with no server: the framework's own rate."""
    rec: dict[str, Any] = {
        'ts': dt.datetime.now().isoformat(timespec='seconds'),
        'server': APP_LOOP,
        'scenario': sc.name,
        'rep': rep,
        'duration_s': opts.duration,
    }
    rec.update(quiet_gate(opts.max_wait))
    # A script has its own directory, bench/, on sys.path: apps.py imports as the servers import it.
    argv = [sys.executable, str(BENCH / 'apploop.py'), sc.target, sc.path, '--seconds', str(opts.duration)]
    rec['cmd'] = ' '.join(argv)
    meter = ForeignMeter()
    meter.update(scan_procs(), set())
    t0 = time.monotonic()
    done = subprocess.run(  # noqa: S603 - argv built above
        ['taskset', '-c', str(SERVER_CPU), *argv],  # noqa: S607
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=opts.duration + opts.start_timeout,
        check=False,
    )
    elapsed = time.monotonic() - t0
    meter.update(scan_procs(), {os.getpid()})
    rec['foreign_cpu_pct'] = round(100 * meter.ticks() / CLK_TCK / elapsed, 1)
    rec['noisy'] = rec['foreign_cpu_pct'] > NOISY_PCT
    line = next((x for x in done.stdout.splitlines() if x.startswith('APPLOOP ')), None)
    if done.returncode != 0 or line is None:
        rec.update(ok=False, issues=[f'app loop failed (exit {done.returncode}): {done.stderr.strip()[-300:]}'])
        return rec
    figures = json.loads(line[len('APPLOOP ') :])
    rec.update(ok=True, issues=[], rps=figures['rps'], cpu_us_per_req=figures['cpu_us_per_call'])
    rec['calls'] = figures['calls']
    return rec
