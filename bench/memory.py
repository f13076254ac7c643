"""Memory under two loads, for rustwsgi alone (the figures go into the closing notes and bench/results/):

* ``slow-reader``: a client reads a 1 GiB generator response at a fixed rate; the server's RSS is sampled every
  second. Backpressure means the generator is not asked for more than the socket takes, so RSS stays flat.
* ``soak``: wrk sends hello-world requests until at least a million have been answered; RSS is sampled after each
  segment, showing whether it reaches a plateau.

    python bench/memory.py slow-reader [--rate 1000000] [--seconds 60]
    python bench/memory.py soak [--requests 1000000]

Run it with the bench virtualenv's python (rustwsgi release build installed); needs wrk for ``soak``.
Traffic goes to 127.0.0.1 only and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f'{name} is needed (Debian: apt-get install {name})')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f'/proc/{pid}/status') as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith('VmRSS:'))
    return kib / 1024


def start(target: str, port: int) -> subprocess.Popen[bytes]:
    rustwsgi = Path(sys.executable).parent / 'rustwsgi'
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [tool('taskset'), '-c', '0', str(rustwsgi), 'serve', target, '--bind', f'127.0.0.1:{port}'],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit('server did not start')


def slow_reader(rate: int, seconds: int) -> None:
    port = free_port()
    proc = start('apps:stream_gib', port)
    try:
        before = rss_mib(proc.pid)
        sock = socket.create_connection(('127.0.0.1', port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(b'GET / HTTP/1.1\r\nHost: bench\r\n\r\n')
        received = 0
        started = time.monotonic()
        peak = before
        print(f'{"second":>6} {"received MiB":>13} {"server RSS MiB":>15}')
        for second in range(1, seconds + 1):
            budget = rate
            while budget > 0:
                chunk = sock.recv(min(65536, budget))
                if not chunk:
                    raise SystemExit('server closed the connection')
                budget -= len(chunk)
                received += len(chunk)
            time.sleep(max(0.0, started + second - time.monotonic()))
            peak = max(peak, rss_mib(proc.pid))
            if second % 5 == 0 or second == 1:
                print(f'{second:>6} {received / 2**20:>13.1f} {rss_mib(proc.pid):>15.1f}')
        print(f'RSS before: {before:.1f} MiB, peak while reading: {peak:.1f} MiB, growth: {peak - before:.1f} MiB')
        sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def soak(requests: int) -> None:
    port = free_port()
    proc = start('apps:hello', port)
    try:
        done = 0
        print(f'{"requests":>10} {"server RSS MiB":>15}')
        print(f'{done:>10} {rss_mib(proc.pid):>15.1f}')
        while done < requests:
            out = subprocess.run(  # noqa: S603 - fixed argv
                [tool('taskset'), '-c', '1', tool('wrk'), '-t1', '-c64', '-d2s', f'http://127.0.0.1:{port}/'],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            match = re.search(r'(\d+) requests in', out)
            if not match or 'Non-2xx' in out or 'Socket errors' in out:
                raise SystemExit(f'wrk reported a problem:\n{out}')
            done += int(match.group(1))
            print(f'{done:>10} {rss_mib(proc.pid):>15.1f}')
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    slow = sub.add_parser('slow-reader')
    slow.add_argument('--rate', type=int, default=1_000_000, help='bytes per second the client reads')
    slow.add_argument('--seconds', type=int, default=60)
    long = sub.add_parser('soak')
    long.add_argument('--requests', type=int, default=1_000_000)
    args = parser.parse_args()
    if args.what == 'slow-reader':
        slow_reader(args.rate, args.seconds)
    else:
        soak(args.requests)


if __name__ == '__main__':
    main()
