"""The settings registry: every rustwsgi option is declared exactly once, here.

Each field of `Config` carries a `Setting` (CLI flags, converter, help). From that one declaration come the
`rustwsgi serve` flags, the `RUSTWSGI_<NAME>` environment variables, the `--help` text and the README's CLI
reference. Precedence when the CLI builds a `Config`: command-line flag, then environment variable, then default.

Adding an option: add a field below with `setting(...)`; if Rust needs it, add it to `Config.server_config()` and to
`ServerConfig` in `src/config.rs` under the same name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .errors import ConfigError

__all__ = ['ENV_PREFIX', 'LOG_LEVELS', 'BindAddress', 'Config', 'Setting', 'format_bind', 'parse_bind', 'settings']

ENV_PREFIX = 'RUSTWSGI_'
LOG_LEVELS = ('debug', 'info', 'warning', 'error', 'critical')
DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 8000

SettingKind = Literal['value', 'list', 'flag']


@dataclass(frozen=True)
class Setting:
    """How one option is spelled on the command line and in the environment, converted and documented.

    `convert` turns a raw value (a string from argv or the environment, or a Python value passed to
    `Config`/`serve()`) into the stored value, raising `ConfigError` with a message that does not name the option.
    For a `list` setting, `convert` handles one item; the environment variable holds comma-separated items.
    """

    name: str
    flags: tuple[str, ...]
    default: Any
    convert: Callable[[Any], Any]
    help: str
    kind: SettingKind = 'value'
    metavar: str | None = None

    @property
    def env(self) -> str:
        """The environment variable that sets this option, e.g. `RUSTWSGI_KEEP_ALIVE`."""
        return ENV_PREFIX + self.name.upper().replace('-', '_')

    @property
    def flag(self) -> str:
        """The canonical (first long) flag, used in error messages."""
        return next((f for f in self.flags if f.startswith('--')), self.flags[0])

    def default_text(self) -> str:
        """The default as a user would type it (comma-separated for lists, '-' when unset)."""
        if self.kind == 'flag':
            return 'off'
        if self.default is None:
            return '-'
        if isinstance(self.default, tuple):
            return ','.join(self.default) if self.default else '-'
        return str(self.default)

    def convert_value(self, value: Any) -> Any:
        """Convert a complete value (a whole list for list settings) to its stored form."""
        if self.kind == 'list':
            items = value.split(',') if isinstance(value, str) else value
            try:
                converted = tuple(self.convert(item) for item in items if not isinstance(item, str) or item.strip())
            except TypeError as exc:
                raise ConfigError(f'expected a string or a list of strings, got {value!r}') from exc
            if not converted and self.default:
                raise ConfigError('needs at least one value')
            return converted
        return self.convert(value)


def setting(
    *flags: str,
    default: Any,
    convert: Callable[[Any], Any],
    help: str,
    kind: SettingKind = 'value',
    metavar: str | None = None,
) -> Any:
    """Declare a `Config` field as a setting; the field name becomes the setting name."""
    spec = {'flags': flags, 'default': default, 'convert': convert, 'help': help, 'kind': kind, 'metavar': metavar}
    return dataclasses.field(default=default, metadata={'setting': spec})


# ---- converters: each accepts a string (argv, environment) or an already-typed Python value ----


def _int(value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f'must be an integer, got {value!r}')
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(str(value).strip(), 10)
        except ValueError:
            raise ConfigError(f'must be an integer, got {value!r}') from None
    if number < minimum:
        raise ConfigError(f'must be an integer >= {minimum}, got {value!r}')
    return number


def positive_int(value: Any) -> int:
    """An integer >= 1."""
    return _int(value, 1)


def non_negative_int(value: Any) -> int:
    """An integer >= 0."""
    return _int(value, 0)


def seconds(value: Any) -> float:
    """A finite, non-negative number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f'must be a number of seconds, got {value!r}')
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigError(f'must be a number of seconds, got {value!r}') from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f'must be a number of seconds >= 0, got {value!r}')
    return number


def boolean(value: Any) -> bool:
    """A boolean; strings accept 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('0', 'false', 'no', 'off'):
        return False
    raise ConfigError(f'must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}')


def log_level(value: Any) -> str:
    """One of LOG_LEVELS, case-insensitive."""
    text = str(value).strip().lower()
    if text not in LOG_LEVELS:
        raise ConfigError(f'must be one of {", ".join(LOG_LEVELS)}, got {value!r}')
    return text


def optional_path(value: Any) -> str | None:
    """A filesystem path, or None."""
    if value is None:
        return None
    text = str(value)
    if not text:
        raise ConfigError('must not be empty')
    return text


def path_list(value: Any) -> str:
    """One directory of a comma-separated list."""
    text = str(value).strip()
    if not text:
        raise ConfigError('must not be empty')
    return text


class BindAddress(NamedTuple):
    """A parsed `--bind` value: a TCP host and port, or a unix socket path."""

    host: str | None
    port: int | None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        """True for `unix:PATH` addresses."""
        return self.path is not None

    @property
    def is_ipv6(self) -> bool:
        """True for TCP addresses whose host is an IPv6 literal."""
        return self.host is not None and ':' in self.host


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f'invalid port in {spec!r}: expected a number from 0 to 65535')
    return int(text)


def _split_host_port(text: str, spec: str) -> tuple[str, int]:
    if text.startswith('['):
        host, sep, rest = text[1:].partition(']')
        if not sep or ':' not in host or (rest and not rest.startswith(':')):
            raise ConfigError(f'invalid bind address {spec!r}: expected [IPv6]:PORT')
        return host, _port(rest[1:], spec) if rest else DEFAULT_PORT
    if text.count(':') > 1:
        # A bare IPv6 literal such as ::1 (a port needs the bracket form).
        return text, DEFAULT_PORT
    if ':' in text:
        host, _, port_text = text.partition(':')
        # An explicit ':PORT' asks for every interface, as in gunicorn.
        return host or '0.0.0.0', _port(port_text, spec)  # noqa: S104
    if text.isdigit():
        return DEFAULT_HOST, _port(text, spec)
    return text, DEFAULT_PORT


def parse_bind(spec: Any) -> BindAddress:
    """Parse a bind address: HOST:PORT, [IPv6]:PORT, unix:PATH, a bare PORT or a bare HOST.

    A bare port listens on 127.0.0.1; a bare host listens on port 8000; an empty host (`:8000`) means 0.0.0.0.
    """
    if not isinstance(spec, str):
        raise ConfigError(f'must be a string, got {spec!r}')
    text = spec.strip()
    if not text:
        raise ConfigError('empty bind address')
    if text.startswith('unix:'):
        path = text[len('unix:') :]
        path = path[2:] if path.startswith('//') else path
        if not path:
            raise ConfigError(f'missing socket path in {spec!r}')
        return BindAddress(None, None, path)
    host, port = _split_host_port(text, spec)
    if ':' in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f'invalid IPv6 address in {spec!r}') from None
    elif not host or any(c.isspace() or c in '[]/' for c in host):
        raise ConfigError(f'invalid host in {spec!r}')
    return BindAddress(host.lower(), port)


def format_bind(address: BindAddress) -> str:
    """The canonical text of an address: `host:port`, `[v6]:port` or `unix:path`."""
    if address.path is not None:
        return f'unix:{address.path}'
    host = f'[{address.host}]' if address.is_ipv6 else address.host
    return f'{host}:{address.port}'


def bind_address(value: Any) -> str:
    """One `--bind` value, validated and normalized (`8000` becomes `127.0.0.1:8000`)."""
    return format_bind(parse_bind(value))


@dataclass(frozen=True)
class Config:
    """Every rustwsgi setting, validated. Build it directly (`Config(threads=8)`), from the CLI or via `serve()`.

    Values are converted on construction, so `Config(threads='8').threads == 8`; a bad value raises `ConfigError`.
    """

    bind: tuple[str, ...] = setting(
        '-b',
        '--bind',
        default=('127.0.0.1:8000',),
        convert=bind_address,
        kind='list',
        metavar='ADDRESS',
        help='Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH, a bare PORT (on 127.0.0.1) or a bare HOST '
        '(port 8000). Repeat the flag to listen on several addresses; in the environment, separate them with commas. '
        'Port 0 picks a free port; the log line shows the real one.',
    )
    threads: int = setting(
        '--threads',
        default=4,
        convert=positive_int,
        metavar='INT',
        help='Number of worker threads running the application; each handles one request at a time.',
    )
    backlog: int = setting(
        '--backlog',
        default=2048,
        convert=positive_int,
        metavar='INT',
        help='The listen(2) backlog: how many connections the kernel queues (handshake done, not yet accepted) '
        'before it refuses or drops new ones. The kernel caps it at net.core.somaxconn.',
    )
    chdir: str | None = setting(
        '--chdir',
        default=None,
        convert=optional_path,
        metavar='DIR',
        help='Change to this directory before loading the application; it is also put on sys.path.',
    )
    pythonpath: tuple[str, ...] = setting(
        '--pythonpath',
        default=(),
        convert=path_list,
        kind='list',
        metavar='DIRS',
        help='Comma-separated directories to put at the front of sys.path before loading the application.',
    )
    log_level: str = setting(
        '--log-level',
        default='info',
        convert=log_level,
        metavar='LEVEL',
        help=f'Error log verbosity: {", ".join(LOG_LEVELS)}.',
    )
    factory: bool = setting(
        '--factory',
        default=False,
        convert=boolean,
        kind='flag',
        help='Treat TARGET as an application factory: call it with no arguments and serve what it returns.',
    )
    keep_alive: float = setting(
        '--keep-alive',
        default=5,
        convert=seconds,
        metavar='SECONDS',
        help='Seconds to wait for the next request on an idle keep-alive connection before closing it.',
    )
    limit_request_line: int = setting(
        '--limit-request-line',
        default=8190,
        convert=positive_int,
        metavar='BYTES',
        help='Maximum size of the HTTP request line (method, target, version); longer lines get 414.',
    )
    limit_request_fields: int = setting(
        '--limit-request-fields',
        default=100,
        convert=positive_int,
        metavar='INT',
        help='Maximum number of header fields in a request; more get 431.',
    )
    limit_request_field_size: int = setting(
        '--limit-request-field_size',
        '--limit-request-field-size',
        default=8190,
        convert=positive_int,
        metavar='BYTES',
        help='Maximum size of one request header field (name and value); larger get 431.',
    )
    limit_request_body: int = setting(
        '--limit-request-body',
        default=0,
        convert=non_negative_int,
        metavar='BYTES',
        help='Maximum size of a request body; larger get 413 before the application runs. 0 means unlimited.',
    )

    def __post_init__(self) -> None:
        for spec in settings():
            try:
                value = spec.convert_value(getattr(self, spec.name))
            except ConfigError as exc:
                raise ConfigError(f'{spec.name}: {exc}') from None
            object.__setattr__(self, spec.name, value)

    @classmethod
    def from_sources(cls, cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from CLI values (None = not given), then `RUSTWSGI_*` variables, then defaults.

        A bad environment value raises `ConfigError` naming the variable.
        """
        cli = cli or {}
        environ = environ if environ is not None else {}
        values: dict[str, Any] = {}
        for spec in settings():
            given = cli.get(spec.name)
            if given is not None:
                values[spec.name] = given
                continue
            raw = environ.get(spec.env, '')
            if raw.strip():
                try:
                    values[spec.name] = spec.convert_value(raw)
                except ConfigError as exc:
                    raise ConfigError(f'{spec.env}: {exc}') from None
        return cls(**values)

    def server_config(self) -> dict[str, Any]:
        """The dict handed to `_rustwsgi.Server`: exactly the keys its `ServerConfig` reads."""
        return {
            'threads': self.threads,
            'keep_alive': float(self.keep_alive),
            'limit_request_line': self.limit_request_line,
            'limit_request_fields': self.limit_request_fields,
            'limit_request_field_size': self.limit_request_field_size,
            'limit_request_body': self.limit_request_body,
        }

    def addresses(self) -> list[BindAddress]:
        """The parsed `bind` addresses."""
        return [parse_bind(spec) for spec in self.bind]


def settings() -> Iterator[Setting]:
    """Every setting, in declaration order."""
    for field in dataclasses.fields(Config):
        yield Setting(name=field.name, **field.metadata['setting'])


def reference_markdown() -> str:
    """The CLI reference table for the README, generated from the registry."""
    rows = ['| Flag | Environment variable | Default | Meaning |', '| --- | --- | --- | --- |']
    for spec in settings():
        flags = ', '.join(f'`{flag} {spec.metavar}`' if spec.metavar else f'`{flag}`' for flag in spec.flags)
        help_text = spec.help.replace('|', '\\|')
        rows.append(f'| {flags} | `{spec.env}` | `{spec.default_text()}` | {help_text} |')
    return '\n'.join(rows) + '\n'
