"""Logging: --access-logfile, --access-logformat (gunicorn atoms and json), --error-logfile, --log-level, --log-config.

Access lines are written after the response has been sent, so the tests wait for the lines to appear.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import rustwsgi
from conftest import Served
from rustwsgi.config import Config
from rustwsgi.logs import ACCESS_LOGGER, access_hook, compile_access_format
from support import (
    Process,
    accepting,
    clean_env,
    free_port,
    read_lines,
    run_cli,
    rustwsgi_command,
    wait_for_lines,
    wait_for_text,
    wait_until,
)

APP = 'proxied:app'
TIMEOUT = 30
CLF_LINE = re.compile(
    r'(?P<h>\S+) - (?P<u>\S+) \[(?P<t>[^]]+)\] "(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)"'
)
JSON_KEYS = {
    'time',
    'remote_addr',
    'method',
    'path',
    'query',
    'protocol',
    'status',
    'bytes',
    'duration',
    'request_id',
    'user_agent',
    'referer',
}


def get(url: str, **kwargs: Any) -> requests.Response:
    with requests.get(url, timeout=TIMEOUT, **kwargs) as response:
        response.content  # noqa: B018 - read the whole body before the connection is released
        return response


# --- the default (gunicorn) format ------------------------------------------------------------------------------------


def test_default_format_is_combined_log_format(serve: Callable[..., Served], tmp_path: Path) -> None:
    """The default line is gunicorn's: address, user, [time], "request line", status, bytes, "referer", "agent"."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--access-logfile', str(log))
    response = get(
        f'{served.url}/whoami?x=1&y=2',
        headers={'User-Agent': 'agent/1.0', 'Referer': 'http://ref.example/page'},
    )
    assert response.status_code == 200
    [line] = wait_for_lines(log, 1)
    match = CLF_LINE.fullmatch(line)
    assert match, line
    assert match['h'] == '127.0.0.1'
    assert match['u'] == '-'
    assert match['r'] == 'GET /whoami?x=1&y=2 HTTP/1.1'
    assert match['s'] == '200'
    assert int(match['b']) == len(response.content)
    assert match['f'] == 'http://ref.example/page'
    assert match['a'] == 'agent/1.0'
    # Apache's time format, with English month names whatever the locale.
    stamp = datetime.strptime(match['t'], '%d/%b/%Y:%H:%M:%S %z')
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 3600
    assert 'GET /whoami' not in served.log(), 'access lines must not go to the error log'


def test_every_response_is_logged_once(serve: Callable[..., Served], tmp_path: Path) -> None:
    """Errors and bodies of every kind get exactly one line each, with the status the client saw."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--access-logfile', str(log))
    statuses = {
        '/': get(f'{served.url}/').status_code,
        '/status/404': get(f'{served.url}/status/404').status_code,
        '/error': get(f'{served.url}/error').status_code,
        '/stream': get(f'{served.url}/stream?chunks=3&size=1000').status_code,
    }
    with requests.post(f'{served.url}/upload', data=b'x' * 100_000, timeout=TIMEOUT) as response:
        statuses['/upload'] = response.status_code
    assert statuses == {'/': 200, '/status/404': 404, '/error': 500, '/stream': 200, '/upload': 200}
    lines = wait_for_lines(log, len(statuses))
    logged = {}
    for line in lines:
        match = CLF_LINE.fullmatch(line)
        assert match, line
        logged[match['r'].split()[1].split('?')[0]] = (int(match['s']), match['b'])
    assert {path: status for path, (status, _) in logged.items()} == statuses
    assert logged['/stream'][1] == '3000'
    assert 'proxied app failure marker' in served.wait_for_log('proxied app failure marker')


def test_access_log_to_stdout(tmp_path: Path) -> None:
    """`--access-logfile -` writes access lines to stdout; the error log stays on stderr."""
    process = Process(rustwsgi_command(APP, '--bind', '127.0.0.1:0', '--access-logfile', '-'))
    try:
        stderr = process.wait_for_stderr('Listening at: ')
        url = re.search(r'Listening at: (\S+)', stderr)
        assert url
        assert get(f'{url[1]}/from-stdout-test').status_code == 200
        stdout = process.wait_for_stdout('/from-stdout-test')
        assert CLF_LINE.fullmatch(stdout.strip()), stdout
        assert '/from-stdout-test' not in process.stderr()
        assert 'Listening at' not in stdout
    finally:
        assert process.stop() == 0


def test_custom_format_atoms(serve: Callable[..., Served], tmp_path: Path) -> None:
    """Every gunicorn atom, the duration atoms, request headers and environ keys."""
    log = tmp_path / 'access.log'
    atoms = ['%(m)s', '%(U)s', '%(q)s', '%(H)s', '%(s)s', '%(B)s', '%(b)s', '%(T)s', '%(M)s', '%(D)s', '%(L)s']
    extra = ['%({x-custom}i)s', '%({missing-header}i)s', '%({SERVER_PROTOCOL}e)s', '%(p)s', '%(u)s', '%(l)s']
    fmt = '|'.join([*atoms, *extra])
    served = serve(APP, '--access-logfile', str(log), '--access-logformat', fmt)
    auth = 'Basic ' + base64.b64encode(b'alice:secret').decode()
    response = get(f'{served.url}/status/404?k=v', headers={'X-Custom': 'custom value', 'Authorization': auth})
    assert response.status_code == 404
    [line] = wait_for_lines(log, 1)
    fields = line.split('|')
    assert fields[:8] == ['GET', '/status/404', 'k=v', 'HTTP/1.1', '404', '10', '10', '0'], line
    millis, micros, decimal = int(fields[8]), int(fields[9]), fields[10]
    assert re.fullmatch(r'\d+\.\d{6}', decimal), decimal
    assert abs(float(decimal) * 1_000_000 - micros) <= 1
    assert millis == micros // 1000
    assert fields[11:] == ['custom value', '-', 'HTTP/1.1', f'<{served.proc.pid}>', 'alice', '-']


def test_head_response_logs_no_body(serve: Callable[..., Served], tmp_path: Path) -> None:
    """%(b)s is '-' when no body bytes were sent (a HEAD answer), %(B)s is 0."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--access-logfile', str(log), '--access-logformat', '%(m)s %(B)s %(b)s')
    with requests.head(f'{served.url}/', timeout=TIMEOUT) as response:
        assert response.status_code == 200
    assert wait_for_lines(log, 1) == ['HEAD 0 -']


def test_client_values_cannot_forge_lines(serve: Callable[..., Served], tmp_path: Path) -> None:
    """An encoded newline in the path stays encoded and quotes in headers are escaped: one line per request."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--access-logfile', str(log))
    assert get(f'{served.url}/a%0Ab%22c', headers={'User-Agent': 'evil" 200 "x'}).status_code == 200
    [line] = wait_for_lines(log, 1)
    assert '"GET /a%0Ab%22c HTTP/1.1"' in line
    assert line.endswith('"evil\\" 200 \\"x"'), line


# --- json -------------------------------------------------------------------------------------------------------------


def test_json_format(serve: Callable[..., Served], tmp_path: Path) -> None:
    """`--access-logformat json`: every line is one JSON object with the documented fields."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--access-logfile', str(log), '--access-logformat', 'json', '--root-path', '/mnt')
    get(f'{served.url}/mnt/whoami?a=1&b=%20', headers={'X-Request-ID': 'req-123', 'User-Agent': 'json-agent'})
    get(f'{served.url}/mnt/status/404')
    get(f'{served.url}/mnt/error')
    get(f'{served.url}/mnt/first')
    get(f'{served.url}/mnt/second', headers={'Referer': 'http://r.example/'})
    with requests.post(f'{served.url}/mnt/upload', data=b'y' * 5000, timeout=TIMEOUT) as upload:
        upload_size = len(upload.content)
    records = {}
    for line in wait_for_lines(log, 6):
        record = json.loads(line)
        assert set(record) == JSON_KEYS, record
        records[record['path']] = record
    whoami = records['/mnt/whoami']
    assert whoami['method'] == 'GET'
    assert whoami['query'] == 'a=1&b=%20'
    assert whoami['status'] == 200
    assert whoami['remote_addr'] == '127.0.0.1'
    assert whoami['protocol'] == 'HTTP/1.1'
    assert whoami['request_id'] == 'req-123'
    assert whoami['user_agent'] == 'json-agent'
    assert whoami['referer'] is None
    assert isinstance(whoami['duration'], float) and whoami['duration'] >= 0
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z', whoami['time'])
    assert records['/mnt/status/404']['status'] == 404
    assert records['/mnt/status/404']['bytes'] == len(b'status 404')
    assert records['/mnt/error']['status'] == 500
    assert records['/mnt/upload'] | {'bytes': upload_size} == records['/mnt/upload']
    assert records['/mnt/upload']['method'] == 'POST'
    assert records['/mnt/second']['referer'] == 'http://r.example/'
    generated = [records['/mnt/first']['request_id'], records['/mnt/second']['request_id']]
    assert all(re.fullmatch(r'[0-9a-f]{16}', rid) for rid in generated), generated
    assert generated[0] != generated[1]


# --- error log, level and dictConfig ----------------------------------------------------------------------------------


def test_error_logfile(tmp_path: Path) -> None:
    """`--error-logfile FILE` gets the start-up lines and application tracebacks; stderr stays quiet."""
    errors = tmp_path / 'error.log'
    process = Process(rustwsgi_command(APP, '--bind', '127.0.0.1:0', '--error-logfile', str(errors)))
    try:
        text = wait_for_text(errors, 'Listening at: ')
        url = re.search(r'Listening at: (\S+)', text)
        assert url
        assert get(f'{url[1]}/error').status_code == 500
        text = wait_for_text(errors, 'proxied app failure marker')
        assert 'Traceback' in text
        assert re.search(r'^\[[^]]+\] \[\d+\] \[ERROR\] ', text, re.MULTILINE), text
    finally:
        assert process.stop() == 0
    assert 'Shutdown complete' in errors.read_text()
    assert process.stderr() == ''


def test_log_level_warning_hides_info(tmp_path: Path) -> None:
    """`--log-level warning` drops the INFO start-up lines but keeps application errors."""
    errors = tmp_path / 'error.log'
    port = free_port()
    args = ['--bind', f'127.0.0.1:{port}', '--error-logfile', str(errors), '--log-level', 'warning']
    process = Process(rustwsgi_command(APP, *args))
    try:
        wait_until(lambda: accepting(port), f'a listener on port {port}')
        assert get(f'http://127.0.0.1:{port}/error').status_code == 500
        text = wait_for_text(errors, 'proxied app failure marker')
        assert 'Listening at' not in text
        assert '[INFO]' not in text
    finally:
        assert process.stop() == 0


def _dict_config(access: Path, errors: Path) -> dict[str, Any]:
    return {
        'version': 1,
        'formatters': {
            'access': {'format': 'ACCESS %(message)s'},
            'error': {'format': 'ERR %(levelname)s %(message)s'},
        },
        'handlers': {
            'access_file': {'class': 'logging.FileHandler', 'filename': str(access), 'formatter': 'access'},
            'error_file': {'class': 'logging.FileHandler', 'filename': str(errors), 'formatter': 'error'},
        },
        'loggers': {
            'rustwsgi.access': {'handlers': ['access_file'], 'level': 'INFO', 'propagate': False},
            'rustwsgi.error': {'handlers': ['error_file'], 'level': 'INFO', 'propagate': False},
        },
    }


def test_log_config_json(tmp_path: Path) -> None:
    """A JSON dictConfig routes both loggers; its access logger turns access logging on without --access-logfile."""
    access, errors = tmp_path / 'access.log', tmp_path / 'error.log'
    config = tmp_path / 'logging.json'
    config.write_text(json.dumps(_dict_config(access, errors)))
    process = Process(rustwsgi_command(APP, '--bind', '127.0.0.1:0', '--log-config', str(config)))
    try:
        text = wait_for_text(errors, 'Listening at: ')
        assert text.startswith('ERR INFO ')
        url = re.search(r'Listening at: (\S+)', text)
        assert url
        assert get(f'{url[1]}/via-dictconfig').status_code == 200
        [line] = wait_for_lines(access, 1)
        assert line.startswith('ACCESS 127.0.0.1 - - [')
        assert '"GET /via-dictconfig HTTP/1.1" 200 5' in line
    finally:
        assert process.stop() == 0
    assert process.stderr() == ''


def test_log_config_toml_root_handler(serve: Callable[..., Served], tmp_path: Path) -> None:
    """A TOML dictConfig that only configures the root logger at INFO receives the access lines (json here);
    rustwsgi.error, which it does not name, keeps its default handler on stderr."""
    access = tmp_path / 'root.log'
    config = tmp_path / 'logging.toml'
    config.write_text(
        '[formatters.plain]\nformat = "%(name)s %(message)s"\n'
        f'[handlers.file]\nclass = "logging.FileHandler"\nfilename = {json.dumps(str(access))}\nformatter = "plain"\n'
        '[root]\nlevel = "INFO"\nhandlers = ["file"]\n'
    )
    served = serve(APP, '--log-config', str(config), '--access-logformat', 'json')
    assert get(f'{served.url}/toml-root').status_code == 200
    [line] = wait_for_lines(access, 1)
    name, payload = line.split(' ', 1)
    assert name == ACCESS_LOGGER
    assert json.loads(payload)['path'] == '/toml-root'
    assert 'Listening at' in served.log()


@pytest.mark.parametrize(
    ('args', 'needle'),
    [
        (['--access-logformat', '%(zz)s'], 'zz'),
        (['--access-logformat', '%({content-type}o)s'], 'not supported'),
        (['--access-logformat', '100%'], 'incomplete format'),
        (['--log-config', 'logging.ini'], '.json or .toml'),
        (['--access-logfile', '/nonexistent-dir-rw/access.log'], 'cannot open log file'),
        (['--error-logfile', '/nonexistent-dir-rw/error.log'], 'cannot open log file'),
    ],
)
def test_bad_log_settings_exit_2(args: list[str], needle: str) -> None:
    """A bad format, log-config name or unwritable log file: one line on stderr, exit status 2."""
    result = run_cli('serve', APP, '--bind', '127.0.0.1:0', *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]


@pytest.mark.parametrize(
    ('name', 'content', 'needle'),
    [
        ('broken.json', '{"version": 1,', 'broken.json'),
        ('broken.toml', 'version = = 1', 'broken.toml'),
        ('bad-handler.json', json.dumps({'version': 1, 'handlers': {'h': {'class': 'no.such.Handler'}}}), 'h'),
        ('list.json', '[1, 2]', 'list.json'),
    ],
)
def test_bad_log_config_file_exit_2(tmp_path: Path, name: str, content: str, needle: str) -> None:
    """A log config file that cannot be read or applied: one line on stderr naming it, exit status 2."""
    path = tmp_path / name
    path.write_text(content)
    result = run_cli('serve', APP, '--bind', '127.0.0.1:0', '--log-config', str(path))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert 'Listening at' not in result.stderr


# --- in-process: the hook and the atoms -------------------------------------------------------------------------------


def test_no_hook_when_access_logging_is_off() -> None:
    """Without an access log file or handler the Rust core gets no hook at all (nothing runs per request)."""
    assert not logging.getLogger(ACCESS_LOGGER).handlers
    assert access_hook(Config()) is None
    assert access_hook(Config(access_logformat='json')) is None


def test_python_api_access_log_is_removed_at_stop(tmp_path: Path) -> None:
    """serve_in_background(access_logfile=...) logs, and takes its handler away again when stopped."""
    log = tmp_path / 'api.log'

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response('200 OK', [('Content-Length', '2')])
        return [b'ok']

    with rustwsgi.serve_in_background(app, access_logfile=str(log), access_logformat='%(r)s %(s)s') as server:
        assert get(f'{server.url}/api?q=1').text == 'ok'
        assert wait_for_lines(log, 1) == ['GET /api?q=1 HTTP/1.1 200']
    assert not logging.getLogger(ACCESS_LOGGER).handlers


def test_atoms_from_a_synthetic_environ() -> None:
    """Atoms read the environ the Rust core passes: user from basic auth, '-' for empty values, escaping."""
    line = compile_access_format('%(h)s|%(u)s|%(r)s|%(a)s|%(f)s|%(b)s|%({x-forwarded-for}i)s|%({CONTENT_TYPE}e)s')
    environ = {
        'REMOTE_ADDR': '',
        'REQUEST_METHOD': 'POST',
        'SCRIPT_NAME': '/app',
        'PATH_INFO': '/caf\xc3\xa9 x',
        'QUERY_STRING': 'q="1"',
        'SERVER_PROTOCOL': 'HTTP/1.0',
        'HTTP_AUTHORIZATION': 'Basic ' + base64.b64encode(b'bob:pw:with:colons').decode(),
        'HTTP_USER_AGENT': 'tab\there',
        'HTTP_X_FORWARDED_FOR': '203.0.113.1',
        'CONTENT_TYPE': 'text/plain',
    }
    assert line(environ, '201 Created', 0, 0.5, 0.0).split('|') == [
        '-',
        'bob',
        'POST /app/caf%C3%A9%20x?q=%221%22 HTTP/1.0',
        'tab\\x09here',
        '-',
        '-',
        '203.0.113.1',
        'text/plain',
    ]


def test_unix_socket_peer_logs_dash(serve: Callable[..., Served], tmp_path: Path) -> None:
    """A unix-socket client has no address: %(h)s is '-'."""
    log = tmp_path / 'access.log'
    path = tmp_path / 'app.sock'
    serve(APP, '--access-logfile', str(log), bind=f'unix:{path}')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(b'GET /over-unix HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
        while sock.recv(65536):
            pass
    [line] = wait_for_lines(log, 1)
    assert line.startswith('- - - [')
    assert '"GET /over-unix HTTP/1.1" 200 5' in line


def test_env_sets_access_log(tmp_path: Path) -> None:
    """RUSTWSGI_ACCESS_LOGFILE and RUSTWSGI_ACCESS_LOGFORMAT work like the flags."""
    log = tmp_path / 'env.log'
    env = clean_env(RUSTWSGI_ACCESS_LOGFILE=str(log), RUSTWSGI_ACCESS_LOGFORMAT='%(m)s %(U)s')
    process = Process(rustwsgi_command(APP, '--bind', '127.0.0.1:0'), env=env)
    try:
        url = re.search(r'Listening at: (\S+)', process.wait_for_stderr('Listening at: '))
        assert url
        get(f'{url[1]}/env')
        assert wait_for_lines(log, 1) == ['GET /env']
    finally:
        assert process.stop() == 0


def test_rotated_log_file_is_reopened(serve: Callable[..., Served], tmp_path: Path) -> None:
    """After logrotate moves the file away, new lines go to a fresh file at the original path."""
    log = tmp_path / 'access.log'
    served = serve(APP, '--access-logfile', str(log), '--access-logformat', '%(U)s')
    get(f'{served.url}/before')
    assert wait_for_lines(log, 1) == ['/before']
    log.rename(tmp_path / 'access.log.1')

    def fresh_file() -> list[str] | None:
        # The file is checked at most once a second; keep requesting until a line lands in a new file.
        get(f'{served.url}/after')
        return read_lines(log) or None

    lines = wait_until(fresh_file, 'a new access.log')
    assert set(lines) == {'/after'}
    assert read_lines(tmp_path / 'access.log.1')[0] == '/before'


def test_filters_and_extra_handlers_still_apply(tmp_path: Path) -> None:
    """A filter or a second handler added to rustwsgi.access after start-up sees every record, as stdlib logging
    promises (the direct write to rustwsgi's own file is only taken while nothing else would see the record)."""
    log = tmp_path / 'api.log'
    logger = logging.getLogger(ACCESS_LOGGER)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    def drop_secret(record: logging.LogRecord) -> bool:
        return '/secret' not in record.getMessage()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response('200 OK', [('Content-Length', '2')])
        return [b'ok']

    with rustwsgi.serve_in_background(app, access_logfile=str(log), access_logformat='%(U)s') as server:
        get(f'{server.url}/one')
        assert wait_for_lines(log, 1) == ['/one']
        logger.addFilter(drop_secret)
        collect = Collect()
        logger.addHandler(collect)
        try:
            for path in ('/secret', '/two'):
                get(f'{server.url}{path}')
            assert wait_for_lines(log, 2) == ['/one', '/two']
            assert wait_until(lambda: seen, 'a record for the added handler') == ['/two']
        finally:
            logger.removeFilter(drop_secret)
            logger.removeHandler(collect)
