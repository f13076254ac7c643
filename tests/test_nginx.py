"""rustwsgi behind a real nginx (Debian `nginx-light`; `.ci/run` installs it).

Each test starts nginx as the current user with a generated config in its tmp dir (pid, logs and temp files there,
`daemon off`), proxying over TCP and over a unix socket. The test client connects to nginx from 127.0.0.5, an
address rustwsgi does not trust, while nginx itself connects from 127.0.0.1 (trusted by default): so REMOTE_ADDR
must be the address nginx appended to X-Forwarded-For, never one the client wrote there.
"""

from __future__ import annotations

import grp
import hashlib
import http.client
import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Served, start_server
from support import accepting, free_port, read_lines, wait_until

APP = 'proxied:app'
TIMEOUT = 30
CLIENT_ADDRESS = '127.0.0.5'
SPOOFED = '198.51.100.23'
UPLOAD_SIZE = 5 * 1024 * 1024
# The restart test: the client loop stops once the restarted instance has answered, and never runs longer than this.
MAX_LOOP_REQUESTS = 50_000

NGINX_CONFIG = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;

events {{
    worker_connections 512;
}}

http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 16m;
    keepalive_requests 1000000;

    upstream backend {{
{servers}
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host backend.internal;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $host;
            # A refused or reset connection is retried on the next server; max_fails=0 never marks one down.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 0;
        }}

        location /stream {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def _nginx_binary() -> str:
    found = shutil.which('nginx') or next((p for p in ('/usr/sbin/nginx',) if os.path.exists(p)), None)
    if found is None:
        pytest.fail('nginx is not installed: apt-get install nginx-light (.ci/run does it)')
    return found


def _user_directive() -> str:
    """As root, nginx workers would switch to `nobody`; keep them as the current user, who owns the tmp dir."""
    if os.geteuid() != 0:
        return ''
    return f'user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};'


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def error_log(self) -> str:
        return '\n'.join(read_lines(self.directory / 'nginx-error.log'))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nginx(directory: Path, upstreams: list[str]) -> Nginx:
    """Start nginx on a free 127.0.0.1 port, proxying to `upstreams` (`host:port` or `unix:/path`)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = '\n'.join(f'        server {upstream} max_fails=0;' for upstream in upstreams)
    config = directory / 'nginx.conf'
    config.write_text(NGINX_CONFIG.format(user=_user_directive(), tmp=directory, servers=servers, port=port))
    command = [_nginx_binary(), '-p', f'{directory}/', '-c', str(config), '-e', str(directory / 'nginx-error.log')]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = Nginx(proc, port, directory)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f'nginx exited with {proc.returncode}:\n{nginx.error_log()}')
        return accepting(port)

    try:
        wait_until(ready, f'nginx on port {port}')
    except BaseException:
        nginx.stop()
        raise
    return nginx


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[list[str]], Nginx]]:
    """Factory: `nginx(['127.0.0.1:8001', 'unix:/tmp/x.sock'])` starts nginx in front of those servers."""
    started: list[Nginx] = []

    def _start(upstreams: list[str]) -> Nginx:
        instance = start_nginx(tmp_path / f'nginx{len(started)}', upstreams)
        started.append(instance)
        return instance

    yield _start
    for instance in started:
        instance.stop()


@pytest.fixture(params=['tcp', 'unix'])
def proxied(request: pytest.FixtureRequest, serve: Callable[..., Served], nginx: Callable[..., Nginx]) -> Nginx:
    """rustwsgi (proxied:app) behind nginx, over TCP or over a unix socket."""
    if request.param == 'tcp':
        served = serve(APP)
        return nginx([f'127.0.0.1:{served.port}'])
    socket_path = Path(request.getfixturevalue('tmp_path')) / 'app.sock'
    serve(APP, bind=f'unix:{socket_path}')
    return nginx([f'unix:{socket_path}'])


def client_get(nginx: Nginx, path: str, headers: dict[str, str], source: str = CLIENT_ADDRESS) -> dict[str, Any]:
    """GET through nginx from `source` (a loopback address) and decode the JSON answer."""
    connection = http.client.HTTPConnection('127.0.0.1', nginx.port, timeout=TIMEOUT, source_address=(source, 0))
    try:
        connection.request('GET', path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body, nginx.error_log())
        return json.loads(body)
    finally:
        connection.close()


# --- client address, scheme and host ---------------------------------------------------------------------------------


def test_client_address_from_nginx(proxied: Nginx) -> None:
    """nginx appends the client's address to X-Forwarded-For; rustwsgi takes the right-most untrusted hop, so a
    spoofed address the client put on the left is ignored. X-Forwarded-Proto and -Host are applied too."""
    seen = client_get(proxied, '/whoami', {'X-Forwarded-For': SPOOFED, 'Host': 'shop.example'})
    assert seen['HTTP_X_FORWARDED_FOR'] == f'{SPOOFED}, {CLIENT_ADDRESS}', 'the header as nginx sets it'
    assert seen['REMOTE_ADDR'] == CLIENT_ADDRESS
    assert seen['wsgi.url_scheme'] == 'https'
    assert seen['HTTP_HOST'] == 'shop.example'

    seen = client_get(proxied, '/whoami', {'Host': 'shop.example'})
    assert seen['HTTP_X_FORWARDED_FOR'] == CLIENT_ADDRESS
    assert seen['REMOTE_ADDR'] == CLIENT_ADDRESS


def test_trusted_hops_are_skipped(proxied: Nginx) -> None:
    """From 127.0.0.1 (itself a trusted proxy), the hop it reports is the client: the walk passes trusted hops."""
    seen = client_get(proxied, '/whoami', {'X-Forwarded-For': SPOOFED}, source='127.0.0.1')
    assert seen['HTTP_X_FORWARDED_FOR'] == f'{SPOOFED}, 127.0.0.1'
    assert seen['REMOTE_ADDR'] == SPOOFED


# --- bodies ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('framing', ['content-length', 'chunked'])
def test_upload_5mib_arrives_intact(proxied: Nginx, framing: str) -> None:
    """A 5 MiB request body reaches the app byte for byte (nginx buffers it to its temp dir first)."""
    payload = os.urandom(UPLOAD_SIZE)
    if framing == 'chunked':
        data: Any = (payload[i : i + 300_000] for i in range(0, len(payload), 300_000))
    else:
        data = payload
    with requests.post(f'{proxied.url}/upload', data=data, timeout=TIMEOUT) as response:
        assert response.status_code == 200, (response.text, proxied.error_log())
        answer = response.json()
    assert answer == {'length': UPLOAD_SIZE, 'sha256': hashlib.sha256(payload).hexdigest()}


def test_streamed_response_arrives_whole(proxied: Nginx) -> None:
    """A streamed (chunked, unbuffered) response of 80 x 64 KiB arrives complete and in order."""
    chunks, size = 80, 65536
    # The same bytes as proxied.stream_chunk(): chunk i is the byte i % 256, repeated.
    expected = hashlib.sha256(b''.join(bytes([i % 256]) * size for i in range(chunks))).hexdigest()
    with requests.get(f'{proxied.url}/stream?chunks={chunks}&size={size}', stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        digest = hashlib.sha256()
        received = 0
        for block in response.iter_content(65536):
            digest.update(block)
            received += len(block)
    assert received == chunks * size
    assert digest.hexdigest() == expected


# --- two instances, one restarted ------------------------------------------------------------------------------------


class RequestLoop:
    """A client thread sending GET /whoami through nginx on one keep-alive connection until told to stop."""

    def __init__(self, nginx: Nginx) -> None:
        self.nginx = nginx
        self.answers: list[tuple[str, int]] = []  # (instance, pid)
        self.failures: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = http.client.HTTPConnection('127.0.0.1', self.nginx.port, timeout=TIMEOUT)
        try:
            for _ in range(MAX_LOOP_REQUESTS):
                if self.done.is_set():
                    return
                try:
                    connection.request('GET', '/whoami')
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.failures.append(repr(exc))
                    connection.close()
                    continue
                if response.status != 200:
                    self.failures.append(f'{response.status}: {body[:200]!r}')
                    continue
                seen = json.loads(body)
                self.answers.append((seen['instance'], seen['pid']))
        finally:
            connection.close()

    def seen(self, instance: str, pid: int | None = None) -> bool:
        return any(name == instance and (pid is None or seen == pid) for name, seen in self.answers[:])


def test_restart_behind_nginx_loses_no_request(nginx: Callable[..., Nginx]) -> None:
    """Two instances behind one upstream; one gets SIGTERM and is started again on the same port while a client
    sends requests in a loop. nginx retries what the stopping instance refuses on the other one: zero failures."""
    port_a, port_b = free_port(), free_port()
    instance_a = start_server(APP, env={'INSTANCE_NAME': 'a'}, bind=f'127.0.0.1:{port_a}')
    instance_b = start_server(APP, env={'INSTANCE_NAME': 'b'}, bind=f'127.0.0.1:{port_b}')
    restarted: Served | None = None
    front = nginx([f'127.0.0.1:{port_a}', f'127.0.0.1:{port_b}'])
    loop = RequestLoop(front)
    loop.thread.start()
    try:
        wait_until(lambda: loop.seen('a') and loop.seen('b'), 'answers from both instances')
        assert instance_a.stop(signal.SIGTERM) == 0, instance_a.log()
        during = len(loop.answers)
        restarted = start_server(APP, env={'INSTANCE_NAME': 'a'}, bind=f'127.0.0.1:{port_a}')
        wait_until(lambda: loop.seen('a', restarted.proc.pid), 'an answer from the restarted instance')
    finally:
        loop.done.set()
        loop.thread.join(TIMEOUT)
        for served in (instance_a, instance_b, restarted):
            if served is not None:
                served.stop()
    assert not loop.thread.is_alive()
    assert loop.failures == [], f'{len(loop.failures)} failed requests: {loop.failures[:5]}\n{front.error_log()}'
    assert len(loop.answers) > during, 'the loop ran across the restart'
    assert loop.seen('a', instance_a.proc.pid)
    assert loop.seen('b')
