"""The `rustwsgi` command line, run as a real subprocess (`python -m rustwsgi` and the `rustwsgi` console script)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import rustwsgi
from conftest import APPS_DIR, Served, raw_request
from rustwsgi.config import settings

TIMEOUT = 30
LISTENING_LINE = re.compile(r'Listening at: (\S+) \(pid: (\d+), threads: (\d+)\)')

# Options the issue names; the registry may add more, and `test_help_lists_every_option` checks those too.
REQUIRED_OPTIONS = {
    '--bind': '127.0.0.1:8000',
    '--threads': None,
    '--backlog': '2048',
    '--chdir': None,
    '--pythonpath': None,
    '--log-level': None,
    '--factory': None,
    '--limit-request-line': '8190',
    '--limit-request-fields': None,
    '--limit-request-field_size': None,
    '--limit-request-body': None,
}

APP_SOURCE = """
def make(name):
    def wsgi(environ, start_response):
        body = name.encode()
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    return wsgi
"""


def python_cli() -> list[str]:
    """`python -m rustwsgi` with the interpreter running the tests."""
    return [sys.executable, '-m', 'rustwsgi']


def console_script() -> list[str]:
    """The installed `rustwsgi` console script (next to the interpreter, as pip installs it)."""
    script = Path(sys.executable).with_name('rustwsgi')
    found = str(script) if script.exists() else shutil.which('rustwsgi')
    assert found, f'the rustwsgi console script is not installed (looked at {script} and on PATH)'
    return [found]


def base_env(**extra: str) -> dict[str, str]:
    """os.environ without RUSTWSGI_* variables, tests/apps on PYTHONPATH, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith('RUSTWSGI_')}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(APPS_DIR), env.get('PYTHONPATH', '')]))
    env.update(extra)
    return env


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to exit by itself (help, version, errors)."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT, env=env or base_env(), cwd=cwd, check=False
    )


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def launch() -> Iterator[Callable[..., Served]]:
    """Start an arbitrary server command line (no implicit --bind) and wait for its Listening line."""
    started: list[Served] = []

    def _launch(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Served:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or base_env(), cwd=cwd)
        served = Served(proc)
        started.append(served)
        served.wait_ready()
        return served

    yield _launch
    for served in started:
        served.stop()
        if served.proc.stderr is not None:
            served.proc.stderr.close()


def http_get(served: Served, path: str = '/') -> requests.Response:
    with requests.get(f'{served.url}{path}', timeout=TIMEOUT) as response:
        return response


# --- version and help -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('command', [python_cli, console_script])
def test_version(command: Callable[[], list[str]]) -> None:
    """`--version` prints the package version and exits 0 (module and console script alike)."""
    result = run([*command(), '--version'])
    assert result.returncode == 0, result.stderr
    assert rustwsgi.__version__ in result.stdout
    assert re.search(r'\d+\.\d+', result.stdout)


def _option_blocks(help_text: str) -> dict[str, str]:
    """Map each flag in argparse help output to the text of its entry."""
    blocks: dict[str, str] = {}
    current: list[str] = []
    entries: list[list[str]] = []
    for line in help_text.splitlines():
        if re.match(r'^\s{1,8}-', line):
            current = [line]
            entries.append(current)
        elif current and line.startswith(' ' * 8):
            current.append(line)
        else:
            current = []
    for entry in entries:
        text = ' '.join(part.strip() for part in entry)
        head = entry[0].strip().split('  ', 1)[0]
        for flag in re.findall(r'(--?[\w-]+)', head):
            blocks[flag] = text
    return blocks


def test_help_lists_every_option() -> None:
    """`serve --help` lists every option with its default and its RUSTWSGI_<NAME> environment variable."""
    result = run([*python_cli(), 'serve', '--help'])
    assert result.returncode == 0, result.stderr
    blocks = _option_blocks(result.stdout)
    for flag, default in REQUIRED_OPTIONS.items():
        assert flag in blocks, f'{flag} missing from serve --help:\n{result.stdout}'
        text = blocks[flag]
        assert re.search(r'default', text, re.IGNORECASE), f'{flag} shows no default: {text}'
        if default is not None:
            assert default in text, f'{flag} does not show its default {default}: {text}'
        env = 'RUSTWSGI_' + flag.lstrip('-').upper().replace('-', '_')
        assert env in text, f'{flag} does not name its environment variable {env}: {text}'
    assert 'listen' in blocks['--backlog'].lower(), 'the --backlog help should explain the listen(2) queue'
    assert '-b' in blocks, 'the short form -b of --bind is missing'

    for spec in settings():
        assert spec.flag in blocks, f'registered option {spec.flag} is not in --help'
        assert spec.env in blocks[spec.flag], f'{spec.flag} does not name {spec.env}'


# --- usage errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('args', 'needle'),
    [
        (['serve', 'pep:app', '--no-such-flag'], '--no-such-flag'),
        (['serve', 'pep:app', '--threads', 'abc'], 'threads'),
        (['serve', 'pep:app', '--threads', '0'], 'threads'),
        (['serve', 'pep:app', '--backlog', 'many'], 'backlog'),
        (['serve', 'pep:app', '--log-level', 'loud'], 'log'),
        (['serve', 'pep:app', '--bind', '127.0.0.1:99999'], '99999'),
        (['serve'], 'TARGET'),
        (['frobnicate'], 'frobnicate'),
    ],
)
def test_usage_error_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    """A bad flag or a bad value: exactly one line on stderr naming the problem, exit status 2."""
    result = run([*python_cli(), *args])
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1, f'expected one line, got:\n{result.stderr}'
    assert needle.lower() in lines[0].lower()
    assert 'Listening at' not in result.stderr


@pytest.mark.parametrize(
    ('variable', 'value'),
    [('RUSTWSGI_THREADS', 'abc'), ('RUSTWSGI_BACKLOG', '-1'), ('RUSTWSGI_LOG_LEVEL', 'loud')],
)
def test_bad_environment_value_exits_2(variable: str, value: str) -> None:
    """A bad RUSTWSGI_* value: one line naming the variable, exit status 2."""
    result = run([*python_cli(), 'serve', 'pep:app', '--bind', '127.0.0.1:0'], env=base_env(**{variable: value}))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1, f'expected one line, got:\n{result.stderr}'
    assert variable in lines[0]


def test_bad_flag_via_console_script() -> None:
    """The console script behaves like `python -m rustwsgi` on usage errors."""
    result = run([*console_script(), 'serve', 'pep:app', '--no-such-flag'])
    assert result.returncode == 2
    assert len(stderr_lines(result)) == 1


# --- loading the application ------------------------------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory of small app modules, none of them on sys.path by default."""
    (tmp_path / 'apps_both.py').write_text(APP_SOURCE + "application = make('application')\napp = make('app')\n")
    (tmp_path / 'apps_app_only.py').write_text(APP_SOURCE + "app = make('app')\n")
    (tmp_path / 'apps_neither.py').write_text(APP_SOURCE + "other = make('other')\n")
    (tmp_path / 'apps_factory.py').write_text(
        APP_SOURCE + "def create_app(name='factory'):\n    return make(name)\n"
        'def cwd_app(environ, start_response):\n'
        '    import os\n'
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        '    return [os.getcwd().encode()]\n'
    )
    (tmp_path / 'apps_broken.py').write_text("raise RuntimeError('import boom marker')\n")
    return tmp_path


@pytest.mark.parametrize(
    ('target', 'extra', 'body'),
    [
        ('apps_both', [], 'application'),
        ('apps_app_only', [], 'app'),
        ('apps_both:app', [], 'app'),
        ('apps_factory:create_app()', [], 'factory'),
        ("apps_factory:create_app('called')", [], 'called'),
        ('apps_factory:create_app', ['--factory'], 'factory'),
    ],
)
def test_target_forms(launch: Callable[..., Served], app_dir: Path, target: str, extra: list[str], body: str) -> None:
    """module (application, then app), module:attr, module:factory() and --factory all load the right callable."""
    served = launch([*python_cli(), 'serve', target, '--bind', '127.0.0.1:0', '--pythonpath', str(app_dir), *extra])
    response = http_get(served)
    assert response.status_code == 200
    assert response.text == body


def test_chdir(launch: Callable[..., Served], app_dir: Path) -> None:
    """--chdir changes the working directory before loading, and the app is importable from there."""
    served = launch([*python_cli(), 'serve', 'apps_factory:cwd_app', '--bind', '127.0.0.1:0', '--chdir', str(app_dir)])
    assert http_get(served).text == str(app_dir.resolve())


def test_pythonpath_from_environment(launch: Callable[..., Served], app_dir: Path) -> None:
    """RUSTWSGI_PYTHONPATH works like --pythonpath."""
    env = base_env(RUSTWSGI_PYTHONPATH=str(app_dir))
    served = launch([*python_cli(), 'serve', 'apps_app_only', '--bind', '127.0.0.1:0'], env=env)
    assert http_get(served).text == 'app'


@pytest.mark.parametrize(
    ('target', 'needles'),
    [
        ('no_such_module_q7:app', ['no_such_module_q7', 'ModuleNotFoundError']),
        ('apps_broken:app', ['apps_broken', 'RuntimeError', 'import boom marker']),
        ('apps_neither', ['apps_neither', 'application']),
        ('apps_both:missing_attr', ['apps_both', 'missing_attr']),
    ],
)
def test_unloadable_app_is_one_line_and_fails(app_dir: Path, target: str, needles: list[str]) -> None:
    """An app that cannot be imported or found: one line naming the module and the exception, non-zero exit."""
    result = run([*python_cli(), 'serve', target, '--bind', '127.0.0.1:0', '--pythonpath', str(app_dir)])
    assert result.returncode != 0
    lines = stderr_lines(result)
    assert len(lines) == 1, f'expected one line, got:\n{result.stderr}'
    for needle in needles:
        assert needle in lines[0], f'{needle!r} not in {lines[0]!r}'
    assert 'Listening at' not in result.stderr


# --- binding ----------------------------------------------------------------------------------------------------------


def test_address_in_use() -> None:
    """Binding a port another socket listens on: one clear line naming the address, non-zero exit."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(('127.0.0.1', 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run([*python_cli(), 'serve', 'pep:app', '--bind', f'127.0.0.1:{port}'])
    assert result.returncode != 0
    lines = stderr_lines(result)
    assert len(lines) == 1, f'expected one line, got:\n{result.stderr}'
    assert str(port) in lines[0]
    assert 'in use' in lines[0].lower()


def test_listening_line_shows_real_port_and_pid(serve: Callable[..., Any]) -> None:
    """Port 0 is reported as the port actually bound, with the pid and the thread count."""
    served = serve('pep:app', '--threads', '3')
    match = LISTENING_LINE.search(served.log())
    assert match, served.log()
    address, pid, threads = match.groups()
    assert re.fullmatch(r'http://127\.0\.0\.1:\d+', address)
    assert served.port != 0
    assert int(pid) == served.proc.pid
    assert threads == '3'
    assert re.search(r'^\[[^]]+\] \[\d+\] \[INFO\] Listening at: ', served.log(), re.MULTILINE)
    assert http_get(served, '/environ').status_code == 200


def test_threads_from_environment(serve: Callable[..., Any]) -> None:
    """RUSTWSGI_THREADS=1 shows up in the Listening line and in wsgi.multithread."""
    served = serve('pep:app', env={'RUSTWSGI_THREADS': '1'})
    assert 'threads: 1)' in served.log()
    environ = http_get(served, '/environ').json()['environ']
    assert environ['wsgi.multithread']['value'] is False


def test_flag_beats_environment(serve: Callable[..., Any]) -> None:
    """A command-line flag wins over the environment variable."""
    served = serve('pep:app', '--threads', '3', env={'RUSTWSGI_THREADS': '1'})
    assert 'threads: 3)' in served.log()


def test_bind_from_environment(launch: Callable[..., Served]) -> None:
    """RUSTWSGI_BIND sets the address when --bind is not given."""
    served = launch([*python_cli(), 'serve', 'pep:app'], env=base_env(RUSTWSGI_BIND='127.0.0.1:0'))
    assert served.url.startswith('http://127.0.0.1:')
    assert served.port != 0
    assert http_get(served, '/environ').status_code == 200


def test_limit_from_environment(serve: Callable[..., Any]) -> None:
    """A dashed option maps to RUSTWSGI_<NAME> with underscores: RUSTWSGI_LIMIT_REQUEST_LINE=200 → 414 over it."""
    served = serve('pep:app', env={'RUSTWSGI_LIMIT_REQUEST_LINE': '200'})
    long_target = '/environ?' + 'a' * 300
    data = raw_request(served.port, f'GET {long_target} HTTP/1.1\r\nHost: a\r\n\r\n'.encode())
    assert data.startswith(b'HTTP/1.1 414') or data.startswith(b'HTTP/1.0 414'), data[:100]
    short = raw_request(served.port, b'GET /environ?a=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    assert short.startswith(b'HTTP/1.1 200'), short[:100]


def test_console_script_serves(launch: Callable[..., Served]) -> None:
    """The `rustwsgi` console script starts a server just like `python -m rustwsgi`."""
    served = launch([*console_script(), 'serve', 'pep:app', '--bind', '127.0.0.1:0'])
    assert http_get(served, '/environ').status_code == 200


def _ipv6_loopback_works() -> str | None:
    """None if a socket can listen on and connect to [::1] here, else the reason it cannot."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
            server.bind(('::1', 0))
            server.listen()
            with socket.create_connection(('::1', server.getsockname()[1]), timeout=5):
                pass
    except OSError as exc:
        return str(exc)
    return None


def test_bind_ipv6_loopback(serve: Callable[..., Any]) -> None:
    """--bind [::1]:0 listens on IPv6 loopback; the Listening line uses the bracket form with the real port."""
    problem = _ipv6_loopback_works()
    if problem is not None:
        pytest.fail(f'IPv6 loopback is unusable on this machine, so --bind [::1]:0 cannot be tested: {problem}')
    served = serve('pep:app', bind='[::1]:0')
    assert re.fullmatch(r'http://\[::1\]:\d+', served.url), served.url
    assert served.port != 0
    data = raw_request(served.port, b'GET /environ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', host='::1')
    assert data.startswith(b'HTTP/1.1 200'), data[:200]
    environ = json.loads(data.split(b'\r\n\r\n', 1)[1])['environ']
    assert environ['REMOTE_ADDR']['value'] == '::1'
    assert environ['SERVER_PORT']['value'] == str(served.port)


def test_bind_unix_socket(serve: Callable[..., Any]) -> None:
    """--bind unix:PATH listens on a unix socket; a raw AF_UNIX client gets an answer."""
    directory = tempfile.mkdtemp(prefix='rw-', dir='/tmp')
    path = os.path.join(directory, 'test.sock')
    try:
        served = serve('pep:app', bind=f'unix:{path}')
        assert served.url == f'unix:{path}'
        assert Path(path).is_socket()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(b'GET /environ?via=unix HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
            data = b''
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b'HTTP/1.1 200'), data[:200]
        environ = json.loads(data.split(b'\r\n\r\n', 1)[1])['environ']
        assert environ['QUERY_STRING']['value'] == 'via=unix'
        assert environ['SERVER_NAME']['value'] == 'localhost'
        assert environ['SERVER_PORT']['value'] == '80'
        served.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
