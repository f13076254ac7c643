"""Deadlines and capacity, enforced in the Rust core: `--timeout` (504 plus the stuck stack in the log),
`--max-queue-wait` (503 with Retry-After, no app), `--max-connections`, and health checks while the app is busy."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import requests
from conftest import raw_request


def test_timeout_answers_504_logs_the_stack_and_keeps_serving(serve):
    served = serve('slow:app', '--timeout', '1', '--threads', '2')
    started = time.monotonic()
    response = requests.get(f'{served.url}/sleep?4', timeout=10)
    waited = time.monotonic() - started
    assert response.status_code == 504
    # The bound: the app sleeps 4 s, a 504 within 2.5 s proves the deadline fired (at 1 s).
    assert waited < 2.5
    log = served.wait_for_log('Request timed out after')
    assert 'GET /sleep?4' in log
    assert 'time.sleep(' in log, 'the stuck thread Python stack is in the log'
    assert requests.get(f'{served.url}/fast', timeout=10).text == 'done'


def test_timeouts_on_two_threads_each_report_their_own_request(serve):
    served = serve('slow:app', '--timeout', '1', '--threads', '2')
    queries = ('3', '2.' + '0' * 150)  # the second is 2 seconds too, with a long request line
    results: dict[str, int] = {}

    def fetch(query: str) -> None:
        results[query] = requests.get(f'{served.url}/sleep?{query}', timeout=10).status_code

    threads = [threading.Thread(target=fetch, args=(query,)) for query in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == dict.fromkeys(queries, 504)
    for query in queries:
        served.wait_for_log(f'answered 504: GET /sleep?{query}\n')
    assert requests.get(f'{served.url}/fast', timeout=10).text == 'done'


def test_timeout_spares_a_response_that_keeps_streaming(serve):
    served = serve('slow:app', '--timeout', '1')
    response = requests.get(f'{served.url}/stream', timeout=20)
    assert response.status_code == 200
    assert response.text == ''.join(f'block {i}\n' for i in range(10))
    assert 'timed out' not in served.log()


def app_thread_names(served) -> list[str]:
    """Names of the server's app threads (`rustwsgi-0`, `rustwsgi-1`, ...; the watcher is `rustwsgi-THREADS`)."""
    names = []
    for task in Path(f'/proc/{served.proc.pid}/task').iterdir():
        try:
            names.append((task / 'comm').read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(name for name in names if name.startswith('rustwsgi-'))


def test_app_threads_start_when_requests_block_and_never_beyond_threads(serve):
    served = serve('slow:app', '--threads', '6')
    # At start: the watcher and one app thread, however many may run. (A thread takes its name once it runs, so
    # the first may still show its parent's for a moment.)
    deadline = time.monotonic() + 5
    while app_thread_names(served) != ['rustwsgi-0', 'rustwsgi-6'] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app_thread_names(served) == ['rustwsgi-0', 'rustwsgi-6']
    for _ in range(20):
        assert requests.get(f'{served.url}/fast', timeout=10).text == 'done'
    # Twelve requests that sleep at once: threads start beside the sleeping ones, up to six.
    statuses: list[int] = []

    def fetch() -> None:
        statuses.append(requests.get(f'{served.url}/sleep?0.5', timeout=30).status_code)

    clients = [threading.Thread(target=fetch) for _ in range(12)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert statuses == [200] * 12
    assert served.log().count('slow request entered the app') == 12
    assert app_thread_names(served) == [f'rustwsgi-{i}' for i in range(7)]


def test_a_request_blocked_on_io_does_not_start_a_thread_for_each_request_that_computes(serve):
    served = serve('slow:app', '--threads', '32')
    sleeper = threading.Thread(target=lambda: requests.get(f'{served.url}/sleep?0.5', timeout=30))
    sleeper.start()
    served.wait_for_log('slow request entered the app')
    answers: list[str] = []

    def fetch() -> None:
        with requests.Session() as session:
            answers.extend(session.get(f'{served.url}/burn?0.002', timeout=60).text for _ in range(10))

    # While one request sleeps, sixteen clients send short computations. One thread beside the sleeping one is
    # enough for them: more would only queue for the GIL (and, once started, stay).
    clients = [threading.Thread(target=fetch) for _ in range(16)]
    for client in clients:
        client.start()
    for client in [*clients, sleeper]:
        client.join()
    assert answers == ['done'] * 160
    app_threads = [name for name in app_thread_names(served) if name != 'rustwsgi-32']
    assert 2 <= len(app_threads) <= 4, app_threads


def test_requests_that_compute_start_at_most_four_threads_and_health_checks_still_answer(serve):
    served = serve('slow:app', '--threads', '8', '--health-path', '/healthz')
    answers: list[str] = []

    def fetch(path: str, count: int) -> None:
        with requests.Session() as session:
            answers.extend(session.get(f'{served.url}{path}', timeout=60).text for _ in range(count))

    # Long computations let threads start beside them (so that short requests are not stuck behind one), but
    # beyond four computing at once another thread would only queue for the GIL.
    clients = [threading.Thread(target=fetch, args=('/burn?0.3', 1)) for _ in range(6)]
    clients += [threading.Thread(target=fetch, args=('/burn?0.002', 20)) for _ in range(8)]
    for client in clients:
        client.start()
    # Meanwhile the core still answers health checks.
    health = requests.get(f'{served.url}/healthz', timeout=10)
    assert (health.status_code, health.text) == (200, 'ok\n')
    for client in clients:
        client.join()
    assert answers == ['done'] * 166
    app_threads = [name for name in app_thread_names(served) if name != 'rustwsgi-8']
    assert 1 <= len(app_threads) <= 4, app_threads


def test_requests_waiting_too_long_are_shed_with_503(serve):
    served = serve('slow:app', '--threads', '1', '--max-queue-wait', '0.2', '--health-path', '/healthz')
    results: list[requests.Response] = []

    def fetch(path: str) -> None:
        results.append(requests.get(f'{served.url}{path}', timeout=10))

    first = threading.Thread(target=fetch, args=('/sleep?1.5',))
    first.start()
    served.wait_for_log('slow request entered the app')  # the only application thread is now busy
    others = [threading.Thread(target=fetch, args=('/fast',)) for _ in range(3)]
    for thread in others:
        thread.start()
    # The health check is answered by the core even while the only app thread is busy.
    health = requests.get(f'{served.url}/healthz', timeout=5)
    assert (health.status_code, health.text) == (200, 'ok\n')
    for thread in [first, *others]:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 503, 503, 503]
    for response in results:
        if response.status_code == 503:
            assert response.headers['Retry-After'] == '1'
            assert response.headers['Connection'] == 'close'


def test_max_connections_leaves_extra_clients_in_the_backlog(serve):
    served = serve('slow:app', '--max-connections', '2')
    holders = [socket.create_connection(('127.0.0.1', served.port)) for _ in range(2)]
    try:
        for holder in holders:
            holder.sendall(b'GET /fast HTTP/1.1\r\nHost: t\r\n\r\n')
            assert holder.recv(4096).startswith(b'HTTP/1.1 200 OK')
        # A third client connects (the kernel queues it) but is not served while two connections are open.
        waiting = socket.create_connection(('127.0.0.1', served.port))
        waiting.settimeout(0.5)
        waiting.sendall(b'GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        try:
            early = waiting.recv(4096)
        except TimeoutError:
            early = b''
        assert early == b''
        # Once one connection closes, the queued client is taken and answered.
        holders.pop().close()
        waiting.settimeout(10)
        answer = b''
        while chunk := waiting.recv(4096):
            answer += chunk
        assert answer.startswith(b'HTTP/1.1 200 OK')
        waiting.close()
    finally:
        for holder in holders:
            holder.close()
    assert raw_request(served.port, b'GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n').endswith(b'done')


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body from `sock`."""
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(4096)
        assert chunk, f'connection closed after {data!r}'
        data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    sizes = [line for line in head.split(b'\r\n') if line.lower().startswith(b'content-length:')]
    length = int(sizes[0].split(b':')[1])
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, f'connection closed after {data!r}'
        body += chunk
    return head.split(b'\r\n')[0] + b' ' + body


def test_a_response_held_back_for_the_next_request_leaves_while_that_one_is_still_running(serve, tmp_path):
    # One app thread answers the requests queued behind a long one back to back, holding each finished response
    # to send with the next ones. The second here runs until the test has the first's answer: the first must
    # leave on its own, not after the second.
    served = serve('slow:app', '--threads', '1')
    release = tmp_path / 'release'
    with (
        socket.create_connection((served.host, served.port), timeout=5) as busy,
        socket.create_connection((served.host, served.port), timeout=5) as first,
        socket.create_connection((served.host, served.port), timeout=5) as second,
    ):
        busy.sendall(b'GET /burn?0.5 HTTP/1.1\r\nHost: x\r\n\r\n')
        time.sleep(0.2)  # the computation is under way: the next two wait in the queue behind it
        first.sendall(b'GET /fast HTTP/1.1\r\nHost: x\r\n\r\n')
        time.sleep(0.05)
        second.sendall(f'GET /until?{release} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        assert read_response(busy) == b'HTTP/1.1 200 OK done'
        assert read_response(first) == b'HTTP/1.1 200 OK done'
        release.touch()
        assert read_response(second) == b'HTTP/1.1 200 OK released'


def test_a_client_that_does_not_read_a_large_file_holds_no_app_thread(serve, tmp_path):
    # A file body leaves with sendfile(2); what the client does not take at once is sent from the poller as it
    # makes room. With one app thread, another client is answered while the first reads nothing.
    data = bytes(range(256)) * (32 * 4096)  # 32 MiB: more than loopback socket buffers hold
    path = tmp_path / 'big'
    path.write_bytes(data)
    served = serve('slow:app', '--threads', '1')
    with socket.create_connection((served.host, served.port), timeout=10) as reader:
        reader.sendall(f'GET /file?{path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        reader.recv(1, socket.MSG_PEEK)  # the response has started
        assert requests.get(f'{served.url}/fast', timeout=5).text == 'done'
        received = b''
        while b'\r\n\r\n' not in received:
            received += reader.recv(65536)
        head, _, body = received.partition(b'\r\n\r\n')
        assert head.startswith(b'HTTP/1.1 200 OK\r\n')
        assert f'content-length: {len(data)}'.encode() in head.lower()
        body_parts = [body]
        size = len(body)
        while size < len(data):
            chunk = reader.recv(1 << 20)
            assert chunk, f'connection closed after {size} bytes'
            body_parts.append(chunk)
            size += len(chunk)
        assert b''.join(body_parts) == data
    # The connection stays usable for the next request after a parked file tail.
    assert requests.get(f'{served.url}/fast', timeout=5).text == 'done'


def test_a_file_that_shrinks_while_its_tail_waits_for_the_client_ends_in_a_close(serve, tmp_path):
    # The poller sends a parked file tail as the client makes room. If the file is cut short meanwhile, the
    # response cannot reach its Content-Length: the client gets what was sent and then the end of the connection,
    # not a connection left open, and the server goes on answering.
    data = bytes(range(256)) * (32 * 4096)  # 32 MiB: more than loopback socket buffers hold
    path = tmp_path / 'big'
    path.write_bytes(data)
    # Idle connections are kept longer than the client waits: only the end of this response may close it.
    served = serve('slow:app', '--threads', '1', '--keep-alive', '60')
    with socket.create_connection((served.host, served.port), timeout=10) as reader:
        reader.sendall(f'GET /file?{path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        reader.recv(1, socket.MSG_PEEK)  # the response has started
        # Answered by the only app thread: the file's tail is parked with the poller by now.
        assert requests.get(f'{served.url}/fast', timeout=5).text == 'done'
        os.truncate(path, 1 << 20)
        received = b''
        while chunk := reader.recv(1 << 20):  # a timeout here: the connection was left open
            received += chunk
    head, _, body = received.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 200 OK\r\n')
    assert f'content-length: {len(data)}'.encode() in head.lower()
    assert len(body) < len(data)
    # What the file still holds arrives intact. Bytes past the cut that were already queued are the kernel's: sendfile
    # queues page-cache pages by reference, and truncating the file changes them.
    kept = min(len(body), 1 << 20)
    assert body[:kept] == data[:kept]
    assert requests.get(f'{served.url}/fast', timeout=5).text == 'done'
