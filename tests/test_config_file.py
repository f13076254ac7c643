"""Config files: rustwsgi.toml, [tool.rustwsgi] in pyproject.toml, -c/--config, precedence and --check-config.

Each test runs the CLI in its own temporary directory, where the default files are looked up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from rustwsgi.config import Config
from rustwsgi.config_file import ConfigFile, find_config_file
from rustwsgi.errors import ConfigError
from support import Process, clean_env, run_cli, rustwsgi_command

APP = 'proxied:app'
TIMEOUT = 30


def check_config(cwd: Path, *args: str, **env: str) -> dict[str, tuple[str, str]]:
    """Run `serve APP --check-config` in `cwd`; map each setting to (value as printed, source)."""
    result = run_cli('serve', APP, '--check-config', *args, env=clean_env(**env), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert 'Listening at' not in result.stderr
    settings = {}
    for line in result.stdout.splitlines():
        match = re.fullmatch(r'(\w+) = (.*?)\s+# (.+)', line) or re.fullmatch(r'# (\w+) is not set\s+# (.+)', line)
        if match and len(match.groups()) == 3:
            settings[match[1]] = (match[2], match[3])
        elif match:
            settings[match[1]] = ('', match[2])
    return settings


@pytest.fixture
def launch() -> Iterator[Callable[..., tuple[Process, str]]]:
    """Start `rustwsgi serve APP` in a directory; returns the process and its URL. Stopped at teardown."""
    started: list[Process] = []

    def _launch(cwd: Path, *args: str) -> tuple[Process, str]:
        process = Process(rustwsgi_command(APP, *args), env=clean_env(), cwd=cwd)
        started.append(process)
        match = re.search(r'Listening at: (\S+) \(pid: \d+, threads: \d+\)', process.wait_for_stderr('threads: '))
        assert match, process.stderr()
        return process, match[1]

    yield _launch
    for process in started:
        assert process.stop() == 0


# --- which file -------------------------------------------------------------------------------------------------------


def test_rustwsgi_toml_in_working_directory(tmp_path: Path, launch: Callable[..., tuple[Process, str]]) -> None:
    """./rustwsgi.toml is read: the server really runs with its settings."""
    (tmp_path / 'rustwsgi.toml').write_text('bind = "127.0.0.1:0"\nthreads = 3\nroot_path = "/mounted"\n')
    process, url = launch(tmp_path)
    assert 'threads: 3)' in process.stderr()
    with requests.get(f'{url}/mounted/whoami', timeout=TIMEOUT) as response:
        assert response.json()['SCRIPT_NAME'] == '/mounted'


def test_pyproject_tool_table(tmp_path: Path, launch: Callable[..., tuple[Process, str]]) -> None:
    """[tool.rustwsgi] in ./pyproject.toml is read when there is no rustwsgi.toml."""
    (tmp_path / 'pyproject.toml').write_text(
        '[project]\nname = "demo"\n\n[tool.rustwsgi]\nbind = ["127.0.0.1:0"]\nthreads = 2\nhealth_path = "/hz"\n'
    )
    _, url = launch(tmp_path)
    with requests.get(f'{url}/hz', timeout=TIMEOUT) as response:
        assert response.text == 'ok\n'


def test_pyproject_without_table_is_ignored(tmp_path: Path) -> None:
    (tmp_path / 'pyproject.toml').write_text('[project]\nname = "demo"\n')
    settings = check_config(tmp_path)
    assert settings['threads'] == ('64', 'default')
    assert find_config_file(tmp_path) is None


def test_rustwsgi_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / 'rustwsgi.toml').write_text('threads = 3\n')
    (tmp_path / 'pyproject.toml').write_text('[tool.rustwsgi]\nthreads = 2\nbacklog = 10\n')
    settings = check_config(tmp_path)
    assert settings['threads'] == ('3', 'rustwsgi.toml')
    assert settings['backlog'] == ('2048', 'default'), 'only one file is read'


@pytest.mark.parametrize('flag', ['-c', '--config'])
def test_explicit_config_file(tmp_path: Path, flag: str) -> None:
    """-c/--config PATH reads that file instead of the default ones; a pyproject.toml through its table."""
    (tmp_path / 'rustwsgi.toml').write_text('threads = 3\n')
    other = tmp_path / 'conf' / 'prod.toml'
    other.parent.mkdir()
    other.write_text('threads = 7\nkeep_alive = 2.5\n')
    settings = check_config(tmp_path, flag, str(other))
    assert settings['threads'] == ('7', str(other))
    assert settings['keep_alive'] == ('2.5', str(other))
    project = tmp_path / 'conf' / 'pyproject.toml'
    project.write_text('[tool.rustwsgi]\nthreads = 6\n')
    assert check_config(tmp_path, flag, str(project))['threads'] == ('6', str(project))


# --- precedence and types ---------------------------------------------------------------------------------------------


def test_precedence_cli_env_file_default(tmp_path: Path) -> None:
    """command line > environment > config file > default, and --check-config says where each value came from."""
    (tmp_path / 'rustwsgi.toml').write_text('threads = 3\nbacklog = 100\nkeep_alive = 7\n')
    settings = check_config(tmp_path, '--threads', '5', RUSTWSGI_THREADS='9', RUSTWSGI_BACKLOG='200')
    assert settings['threads'] == ('5', 'command line')
    assert settings['backlog'] == ('200', 'RUSTWSGI_BACKLOG')
    assert settings['keep_alive'] == ('7.0', 'rustwsgi.toml')
    assert settings['limit_request_line'] == ('8190', 'default')
    assert settings['chdir'] == ('', 'default')


def test_file_value_types(tmp_path: Path) -> None:
    """Lists as arrays or comma-separated strings, booleans, strings with TOML escapes."""
    (tmp_path / 'rustwsgi.toml').write_text(
        'bind = ["127.0.0.1:0", "unix:/tmp/rw.sock"]\nforwarded_allow_ips = "10.0.0.0/8, 192.168.0.1"\n'
        'factory = true\naccess_logformat = "%(h)s \\"%(r)s\\""\n'
    )
    settings = check_config(tmp_path)
    assert settings['bind'] == ('["127.0.0.1:0", "unix:/tmp/rw.sock"]', 'rustwsgi.toml')
    assert settings['forwarded_allow_ips'] == ('["10.0.0.0/8", "192.168.0.1"]', 'rustwsgi.toml')
    assert settings['factory'] == ('true', 'rustwsgi.toml')
    assert settings['access_logformat'] == ('"%(h)s \\"%(r)s\\""', 'rustwsgi.toml')


def _values(output: str) -> list[str]:
    return [line.split('  #')[0].strip() for line in output.splitlines() if not line.startswith('#')]


def test_check_config_output_is_a_config_file(tmp_path: Path) -> None:
    """What --check-config prints reads back as a config file giving the same settings."""
    result = run_cli('serve', APP, '--check-config', '--threads', '6', '--root-path', '/x', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (tmp_path / 'rustwsgi.toml').write_text(result.stdout)
    again = run_cli('serve', APP, '--check-config', cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _values(again.stdout) == _values(result.stdout)
    assert 'threads = 6' in again.stdout


# --- errors -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('content', 'needles'),
    [
        ('thread = 3\n', ['rustwsgi.toml', "unknown setting 'thread'", "did you mean 'threads'"]),
        ('zzz = 1\n', ['rustwsgi.toml', "unknown setting 'zzz'"]),
        ('threads = 0\n', ['rustwsgi.toml', 'threads', '>= 1']),
        ('threads = "many"\n', ['rustwsgi.toml', 'threads']),
        ('factory = "perhaps"\n', ['rustwsgi.toml', 'factory']),
        ('threads = = 3\n', ['rustwsgi.toml', 'invalid TOML']),
        ('[server]\nthreads = 3\n', ['rustwsgi.toml', "unknown setting 'server'"]),
    ],
)
def test_bad_file_is_one_line_exit_2(tmp_path: Path, content: str, needles: list[str]) -> None:
    """Unknown keys, bad values and bad TOML: one line on stderr naming the file, exit status 2, nothing served."""
    (tmp_path / 'rustwsgi.toml').write_text(content)
    for extra in ([], ['--check-config']):
        result = run_cli('serve', APP, '--bind', '127.0.0.1:0', *extra, cwd=tmp_path)
        assert result.returncode == 2, (result.returncode, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        for needle in needles:
            assert needle in lines[0], lines[0]
        assert result.stdout == ''


def test_missing_explicit_file_exit_2(tmp_path: Path) -> None:
    result = run_cli('serve', APP, '-c', str(tmp_path / 'nope.toml'), cwd=tmp_path)
    assert result.returncode == 2
    assert 'nope.toml' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explicit_pyproject_without_table_exit_2(tmp_path: Path) -> None:
    (tmp_path / 'pyproject.toml').write_text('[project]\nname = "demo"\n')
    result = run_cli('serve', APP, '--config', 'pyproject.toml', cwd=tmp_path)
    assert result.returncode == 2
    assert 'no [tool.rustwsgi] table' in result.stderr


def test_env_error_names_variable_before_file(tmp_path: Path) -> None:
    """A bad environment value is reported by its variable even when the file sets the same option."""
    (tmp_path / 'rustwsgi.toml').write_text('threads = 3\n')
    result = run_cli('serve', APP, '--check-config', env=clean_env(RUSTWSGI_THREADS='x'), cwd=tmp_path)
    assert result.returncode == 2
    assert 'RUSTWSGI_THREADS' in result.stderr


# --- the Python side --------------------------------------------------------------------------------------------------


def test_resolve_reports_sources() -> None:
    file = ConfigFile('/etc/app.toml', {'threads': 3, 'keep_alive': 1, 'bind': '127.0.0.1:9000'})
    config, sources = Config.resolve({'threads': 8}, {'RUSTWSGI_KEEP_ALIVE': '2'}, file)
    assert (config.threads, config.keep_alive, config.bind) == (8, 2.0, ('127.0.0.1:9000',))
    assert (sources['threads'], sources['keep_alive'], sources['bind']) == (
        'command line',
        'RUSTWSGI_KEEP_ALIVE',
        file.path,
    )
    with pytest.raises(ConfigError, match="unknown setting 'treads'"):
        Config.resolve({}, {}, ConfigFile('x.toml', {'treads': 1}))
