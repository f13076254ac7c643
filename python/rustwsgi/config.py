"""The settings registry: every rustwsgi option is declared exactly once, here.

Each field of `Config` carries a `Setting` (CLI flags, converter, help). From that one declaration come the
`rustwsgi serve` flags, the `RUSTWSGI_<NAME>` environment variables, the `--help` text and the README's CLI
reference; a config file (`config_file.py`) uses the setting names as keys. Precedence when the CLI builds a
`Config`: command-line flag, then environment variable, then config file, then default.

Adding an option: add a field below with `setting(...)`; if Rust needs it, add it to `Config.server_config()` and to
`ServerConfig` in `src/config.rs` under the same name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .config_file import ConfigFile
from .errors import ConfigError
from .logs import DEFAULT_ACCESS_FORMAT, check_access_format

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
    env_aliases: tuple[str, ...] = ()
    allow_empty: bool = False

    @property
    def env(self) -> str:
        """The environment variable that sets this option, e.g. `RUSTWSGI_KEEP_ALIVE`."""
        return ENV_PREFIX + self.name.upper().replace('-', '_')

    @property
    def env_names(self) -> tuple[str, ...]:
        """`env`, then other accepted variables (gunicorn's `FORWARDED_ALLOW_IPS`), in order of precedence."""
        return (self.env, *self.env_aliases)

    @property
    def flag(self) -> str:
        """The canonical (first long) flag, used in error messages."""
        return next((f for f in self.flags if f.startswith('--')), self.flags[0])

    def default_text(self) -> str:
        """The default as a user would type it (comma-separated for lists, `none` when unset)."""
        if self.kind == 'flag':
            return 'off'
        if self.default is None or self.default == '':
            # Not '-': for the log file settings '-' means a standard stream.
            return 'none'
        if isinstance(self.default, tuple):
            return ','.join(self.default) if self.default else 'none'
        return str(self.default)

    def convert_value(self, value: Any) -> Any:
        """Convert a complete value (a whole list for list settings) to its stored form."""
        if self.kind == 'list':
            items = value.split(',') if isinstance(value, str) else value
            try:
                converted = tuple(self.convert(item) for item in items if not isinstance(item, str) or item.strip())
            except TypeError as exc:
                raise ConfigError(f'expected a string or a list of strings, got {value!r}') from exc
            if not converted and self.default and not self.allow_empty:
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
    env_aliases: tuple[str, ...] = (),
    allow_empty: bool = False,
) -> Any:
    """Declare a `Config` field as a setting; the field name becomes the setting name."""
    spec = {'flags': flags, 'default': default, 'convert': convert, 'help': help, 'kind': kind, 'metavar': metavar}
    spec.update(env_aliases=env_aliases, allow_empty=allow_empty)
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


def worker_count(value: Any) -> int:
    """A number of worker processes >= 1, or `auto`: the CPUs this process may run on (its affinity mask)."""
    if isinstance(value, str) and value.strip().lower() == 'auto':
        return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    return _int(value, 1)


def octal_umask(value: Any) -> int:
    """File permission bits to clear, 0 to 0o777; a string is read as octal (`007`, `0o117`)."""
    if isinstance(value, bool):
        raise ConfigError(f'must be an octal mode such as 007, got {value!r}')
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower().removeprefix('0o')
        if not text or any(c not in '01234567' for c in text):
            raise ConfigError(f'must be an octal mode such as 007, got {value!r}')
        number = int(text, 8)
    if not 0 <= number <= 0o777:
        raise ConfigError(f'must be an octal mode from 0 to 777, got {value!r}')
    return number


def log_file(value: Any) -> str:
    """A log file path, or `-` for the standard stream."""
    text = str(value).strip()
    if not text:
        raise ConfigError("must be a file path or '-'")
    return text


def log_config_file(value: Any) -> str | None:
    """A dictConfig file: JSON (`.json`) or TOML (`.toml`); it is read when the server starts."""
    path = optional_path(value)
    if path is not None and not path.lower().endswith(('.json', '.toml')):
        raise ConfigError(f'expected a .json or .toml file, got {value!r}')
    return path


def trusted_proxy(value: Any) -> str:
    """One trusted proxy: an IP address, a CIDR block (`10.0.0.0/8`) or `*` for every peer."""
    text = str(value).strip()
    if text == '*':
        return text
    address, slash, bits = text.partition('/')
    try:
        if '%' in address or (slash and not bits.isdigit()):
            raise ValueError(text)
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f'expected an IP address, a CIDR block such as 10.0.0.0/8, or *, got {value!r}') from None
    return text


def _url_path(value: Any) -> str:
    text = str(value).strip()
    if not text.startswith('/') or not text.isascii() or not text.isprintable() or any(c in text for c in ' ?#'):
        raise ConfigError(f'must be a URL path starting with / (ASCII, no spaces, ? or #), got {value!r}')
    return text


def mount_path(value: Any) -> str:
    """The path prefix an application is mounted under (`/app`), without a trailing slash; `` or `/` for none."""
    text = str(value).strip()
    return _url_path(text).rstrip('/') if text else ''


def health_path(value: Any) -> str | None:
    """A URL path (`/healthz`), or None."""
    return None if value is None else _url_path(value)


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
        default=64,
        convert=positive_int,
        metavar='INT',
        help='Most requests inside the application at once, one a thread. Threads start as needed: while requests '
        'block on I/O (a database, an upstream), up to this many run side by side; requests that compute for long '
        'share at most 4; otherwise one thread runs them all.',
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
        help='Seconds to wait for the next request on an idle keep-alive connection before closing it. 0 turns '
        'keep-alive off: every response says `Connection: close` and ends its connection.',
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
    # ---- deadlines and capacity (enforced by the Rust core) ----
    timeout: float = setting(
        '-t',
        '--timeout',
        default=30,
        convert=seconds,
        metavar='SECONDS',
        help='Per-request deadline inside the application. When it passes the client gets 504 at once, the error '
        'log shows the Python stack where the application thread is stuck, and the server keeps serving others. '
        '0 disables it.',
    )
    header_timeout: float = setting(
        '--header-timeout',
        default=30,
        convert=seconds,
        metavar='SECONDS',
        help='Time a client has to send its complete request head (and a body of up to 64 KiB) before the connection '
        'is closed; stops clients that trickle bytes from holding connections forever.',
    )
    body_timeout: float = setting(
        '--body-timeout',
        default=30,
        convert=seconds,
        metavar='SECONDS',
        help='Longest pause between bytes of a large request body the application is reading; after it the read '
        'fails, the client gets 408 and the connection is closed.',
    )
    body_min_rate: int = setting(
        '--body-min-rate',
        default=500,
        convert=non_negative_int,
        metavar='BYTES_PER_SECOND',
        help='Slowest average rate a large request body may arrive at: it may keep the application waiting '
        '--body-timeout in all, plus one second for every BYTES_PER_SECOND bytes it has sent, then the read fails '
        'and the client gets 408. Stops clients that send a byte just before each pause would time out. 0 disables '
        'it.',
    )
    write_timeout: float = setting(
        '--write-timeout',
        default=30,
        convert=seconds,
        metavar='SECONDS',
        help='Time a client may take none of its response before the connection is dropped.',
    )
    proxy_protocol: bool = setting(
        '--proxy-protocol',
        default=False,
        convert=boolean,
        kind='flag',
        help='Expect a PROXY protocol header (version 1 or 2, as HAProxy and AWS load balancers send) at the start '
        'of each connection from a peer in --forwarded-allow-ips; it gives the client address. Connections from '
        'those peers without a valid header get 400.',
    )
    max_connections: int = setting(
        '--max-connections',
        default=10000,
        convert=non_negative_int,
        metavar='INT',
        help='Open client connections per process beyond which the server stops accepting; further connections wait '
        'in the kernel backlog. 0 means no limit.',
    )
    max_queue_wait: float = setting(
        '--max-queue-wait',
        default=0,
        convert=seconds,
        metavar='SECONDS',
        help='Longest a parsed request may wait for a free application thread; after that it is answered 503 with '
        'Retry-After by the server core, without the application. 0 disables it (requests still get 503 when '
        '1024 are already waiting).',
    )
    # ---- processes, signals and binds (the supervisor: supervisor.py) ----
    workers: int = setting(
        '-w',
        '--workers',
        default=1,
        convert=worker_count,
        metavar='INT',
        help='Number of worker processes, or `auto` for one per CPU this process may run on. With more than one '
        '(or with --max-requests or --reload) a supervisor process forks the workers, replaces any that die and '
        'handles SIGHUP, SIGTTIN and SIGTTOU; with one, rustwsgi serves in its main process.',
    )
    max_requests: int = setting(
        '--max-requests',
        default=0,
        convert=non_negative_int,
        metavar='INT',
        help='Replace a worker after it has answered this many requests: a fresh worker takes over its socket while '
        'the old one finishes the requests it has in progress. 0 disables it.',
    )
    max_requests_jitter: int = setting(
        '--max-requests-jitter',
        default=0,
        convert=non_negative_int,
        metavar='INT',
        help='Add a random number from 0 to this to --max-requests for each worker, so workers are not all '
        'replaced at the same time.',
    )
    preload: bool = setting(
        '--preload',
        default=False,
        convert=boolean,
        kind='flag',
        help='Import the application once in the supervisor, before binding and forking the workers. Import '
        'errors then stop rustwsgi at once; SIGHUP restarts the workers without re-importing the application.',
    )
    graceful_timeout: float = setting(
        '--graceful-timeout',
        default=30,
        convert=seconds,
        metavar='SECONDS',
        help='How long a stopping worker may take to finish its requests in progress (after SIGTERM, SIGINT, or '
        'when replaced by SIGHUP, SIGTTOU or --max-requests); then its connections are closed and, if application '
        'code is still running, the worker process is killed.',
    )
    reload: bool = setting(
        '--reload',
        default=False,
        convert=boolean,
        kind='flag',
        help="Development: restart the workers when a Python file in the application's directory changes. Needs "
        'the watchfiles package (pip install "rustwsgi[reload]").',
    )
    pid: str | None = setting(
        '-p',
        '--pid',
        default=None,
        convert=optional_path,
        metavar='FILE',
        help='Write the process id of the server (of the supervisor when there is one) to this file; it is removed '
        'at exit.',
    )
    umask: int = setting(
        '-m',
        '--umask',
        default=0,
        convert=octal_umask,
        metavar='MODE',
        help='Permission bits (octal) removed from the mode of unix socket files rustwsgi creates. The default 0 '
        'gives srwxrwxrwx, so a proxy running as another user can connect; 007 limits it to owner and group.',
    )
    # ---- logs, proxies, health (logs.py) ----
    access_logfile: str | None = setting(
        '--access-logfile',
        default=None,
        convert=optional_path,
        metavar='FILE',
        help="Write one line per response to this file ('-' means stdout) through the rustwsgi.access logger. "
        'Without it (or a --log-config that gives rustwsgi.access a handler) access logging is off and costs nothing.',
    )
    access_logformat: str = setting(
        '--access-logformat',
        default=DEFAULT_ACCESS_FORMAT,
        convert=check_access_format,
        metavar='FORMAT',
        help="The access log line, from gunicorn's atoms: %(h)s remote address, %(l)s '-', %(u)s user (basic auth), "
        '%(t)s request time, %(r)s request line, %(m)s method, %(U)s path, %(q)s query, %(H)s protocol, %(s)s status, '
        "%(B)s body bytes, %(b)s the same or '-' for none, %(f)s referer, %(a)s user agent, %(T)s / %(M)s / %(D)s / "
        '%(L)s duration in seconds / milliseconds / microseconds / decimal seconds, %(p)s pid, %({header}i)s a '
        'request header, %({key}e)s an environ key. Or `json`: one JSON object per line with time, remote_addr, '
        'method, path, query, protocol, status, bytes, duration (seconds), request_id (the X-Request-ID header, '
        'else a random id), user_agent and referer.',
    )
    error_logfile: str = setting(
        '--error-logfile',
        '--log-file',
        default='-',
        convert=log_file,
        metavar='FILE',
        help="Where the rustwsgi.error logger writes (start-up, shutdown, application errors); '-' means stderr.",
    )
    log_config: str | None = setting(
        '--log-config',
        default=None,
        convert=log_config_file,
        metavar='FILE',
        help='A logging.config.dictConfig dictionary in a JSON (.json) or TOML (.toml) file, applied at start-up. '
        'Loggers it names (rustwsgi.error, rustwsgi.access) keep exactly its handlers; the defaults above apply to '
        'the others. Access lines are written when it lets rustwsgi.access emit INFO records to a handler.',
    )
    forwarded_allow_ips: tuple[str, ...] = setting(
        '--forwarded-allow-ips',
        default=('127.0.0.1', '::1'),
        convert=trusted_proxy,
        kind='list',
        metavar='ADDRESSES',
        env_aliases=('FORWARDED_ALLOW_IPS',),
        allow_empty=True,
        help='Proxies whose X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Forwarded (RFC 7239) headers '
        'are believed: comma-separated addresses, CIDR blocks, or * for every peer; empty for none. From a trusted '
        'peer, the right-most address that is not itself a trusted proxy becomes REMOTE_ADDR, and the scheme and '
        'host set wsgi.url_scheme and HTTP_HOST; from other peers the headers are left alone. Unix socket peers are '
        'always trusted. FORWARDED_ALLOW_IPS is read too, as in gunicorn.',
    )
    root_path: str = setting(
        '--root-path',
        default='',
        convert=mount_path,
        metavar='PATH',
        help='The URL path prefix the application is mounted under behind a proxy (/app): it becomes SCRIPT_NAME '
        'and is removed from the front of PATH_INFO.',
    )
    health_path: str | None = setting(
        '--health-path',
        default=None,
        convert=health_path,
        metavar='PATH',
        help='Answer GET and HEAD requests for exactly this path (/healthz) in the server core, without the '
        "application, even while every thread is busy: 200 'ok', or 503 'draining' once the server is shutting "
        'down, so a load balancer stops sending.',
    )

    def __post_init__(self) -> None:
        for spec in settings():
            try:
                value = spec.convert_value(getattr(self, spec.name))
            except ConfigError as exc:
                raise ConfigError(f'{spec.name}: {exc}') from None
            object.__setattr__(self, spec.name, value)

    @classmethod
    def from_sources(
        cls,
        cli: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        file: ConfigFile | None = None,
    ) -> Config:
        """Build a Config from CLI values (None = not given), then `RUSTWSGI_*` variables, then `file`, then
        defaults. A bad value raises `ConfigError` naming the variable or the file."""
        return cls.resolve(cli, environ, file)[0]

    @classmethod
    def resolve(
        cls,
        cli: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        file: ConfigFile | None = None,
    ) -> tuple[Config, dict[str, str]]:
        """As `from_sources`, also returning where each setting came from: `command line`, the environment
        variable's name, the file's path, or `default`. A key of `file` that is no setting raises `ConfigError`."""
        cli = cli or {}
        environ = environ if environ is not None else {}
        specs = list(settings())
        if file is not None:
            names = [spec.name for spec in specs]
            for key in file.values:
                if key not in names:
                    import difflib  # only to suggest a name for a mistyped setting

                    close = difflib.get_close_matches(key, names, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ''
                    raise ConfigError(f'{file.path}: unknown setting {key!r}{hint}')
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for spec in specs:
            given = cli.get(spec.name)
            variable = next((name for name in spec.env_names if environ.get(name, '').strip()), None)
            if given is not None:
                values[spec.name], sources[spec.name] = given, 'command line'
            elif variable is not None:
                try:
                    values[spec.name] = spec.convert_value(environ[variable])
                except ConfigError as exc:
                    raise ConfigError(f'{variable}: {exc}') from None
                sources[spec.name] = variable
            elif file is not None and spec.name in file.values:
                try:
                    values[spec.name] = spec.convert_value(file.values[spec.name])
                except ConfigError as exc:
                    raise ConfigError(f'{file.path}: {spec.name}: {exc}') from None
                sources[spec.name] = file.path
            else:
                sources[spec.name] = 'default'
        return cls(**values), sources

    def server_config(self) -> dict[str, Any]:
        """The dict handed to `_rustwsgi.Server`: exactly the keys its `ServerConfig` reads."""
        return {
            'threads': self.threads,
            'keep_alive': float(self.keep_alive),
            'limit_request_line': self.limit_request_line,
            'limit_request_fields': self.limit_request_fields,
            'limit_request_field_size': self.limit_request_field_size,
            'limit_request_body': self.limit_request_body,
            'max_requests': self.max_requests,
            'forwarded_allow_ips': list(self.forwarded_allow_ips),
            'root_path': self.root_path,
            'health_path': self.health_path,
            'timeout': float(self.timeout),
            'max_connections': self.max_connections,
            'max_queue_wait': float(self.max_queue_wait),
            'proxy_protocol': self.proxy_protocol,
            'header_timeout': float(self.header_timeout),
            'body_timeout': float(self.body_timeout),
            'body_min_rate': self.body_min_rate,
            'write_timeout': float(self.write_timeout),
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
