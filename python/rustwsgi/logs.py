"""The `rustwsgi.error` and `rustwsgi.access` loggers: where they write, and how an access line is formatted.

The Rust core calls the hook made by `access_hook()` after each response with (environ, status, body bytes sent,
seconds taken). When access logging is off there is no hook at all, so it costs nothing per request.

Access lines use gunicorn's format atoms (`%(h)s %(l)s %(u)s %(t)s "%(r)s" ...`), or are one JSON object per line
with `--access-logformat json`. Logging configuration is process-wide, as the stdlib `logging` module is.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.encoder
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .config_file import read_toml
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    'ACCESS_LOGGER',
    'DEFAULT_ACCESS_FORMAT',
    'ERROR_LOGGER',
    'JSON_FORMAT',
    'LOG_DATEFMT',
    'LOG_FORMAT',
    'AccessHook',
    'LoggingSetup',
    'access_hook',
    'check_access_format',
    'configure_logging',
    'load_log_config',
    'setup_logging',
]

ERROR_LOGGER = 'rustwsgi.error'
ACCESS_LOGGER = 'rustwsgi.access'
LOG_FORMAT = '[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s'
LOG_DATEFMT = '%Y-%m-%d %H:%M:%S %z'
DEFAULT_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
JSON_FORMAT = 'json'
REOPEN_CHECK_INTERVAL = 1.0  # seconds between checks that a log file was rotated away

Environ = Mapping[str, Any]
AccessHook = Callable[[dict[str, Any], str, int, float], None]
# One atom: (environ, status, body bytes, seconds, request start as a Unix time) -> text.
Atom = Callable[[Environ, str, int, float, float], str]

_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[assignment]
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')
_ATOM_KEY = re.compile(r'%\(([^)]*)\)')
_ATOM_S = re.compile(r'%\(([^)]*)\)s')
# Characters that would make a log line ambiguous or let a client forge one: quoted or escaped.
_UNSAFE_IN_PATH = re.compile(r'[^\x21-\x7e]|["\\]')
_UNSAFE_IN_VALUE = re.compile(r'[\x00-\x1f\x7f-\uffff"\\]')


# ---- the loggers ----------------------------------------------------------------------------------------------------


class _RustwsgiHandler(logging.Handler):
    """Marks handlers rustwsgi installed itself, so they are never installed twice and can be removed again."""


class _StderrHandler(logging.StreamHandler, _RustwsgiHandler):  # type: ignore[type-arg]
    """The default handler of `rustwsgi.error`: stderr in rustwsgi's format."""


class _LineHandler(_RustwsgiHandler):
    """A rustwsgi stream handler that also takes a finished line without a LogRecord: the access log's fast path,
    used while this handler is the only thing that would see the record."""

    def _line_stream(self) -> IO[str]:
        raise NotImplementedError

    def write_line(self, text: str) -> None:
        """Write `text` and a newline and flush, as `emit()` does for a record whose message is `text`."""
        self.acquire()
        try:
            stream = self._line_stream()
            stream.write(text + '\n')
            stream.flush()
        finally:
            self.release()


class _StreamHandler(logging.StreamHandler, _LineHandler):  # type: ignore[type-arg]
    """A `-` log file: stdout for the access log, stderr for the error log."""

    def _line_stream(self) -> IO[str]:
        return self.stream  # type: ignore[no-any-return]


class _FileHandler(logging.handlers.WatchedFileHandler, _LineHandler):
    """A log file, reopened when it is moved or removed, so logrotate needs no signal.

    The file is checked (a stat call) at most once a second rather than for every line, as access lines are many.
    """

    _checked = 0.0

    def reopenIfNeeded(self) -> None:  # noqa: N802 - the stdlib's name
        now = time.monotonic()
        if now - self._checked >= REOPEN_CHECK_INTERVAL:
            self._checked = now
            super().reopenIfNeeded()

    def _line_stream(self) -> IO[str]:
        self.reopenIfNeeded()
        if self.stream is None:
            self.stream = self._open()
        return self.stream


class _MessageFormatter(logging.Formatter):
    """`%(message)s` without the general Formatter's per-record work: access lines arrive fully formatted."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_logging(level: str = 'info', *, force: bool = True) -> logging.Logger:
    """Send the `rustwsgi.error` logger to stderr in rustwsgi's format at `level`.

    With `force=False` (the Python API), an application that already configured logging keeps its handlers.
    """
    logger = logging.getLogger(ERROR_LOGGER)
    logger.setLevel(level.upper())
    ours = any(isinstance(handler, _StderrHandler) for handler in logger.handlers)
    configured = bool(logger.handlers or logging.getLogger().handlers)
    if not ours and (force or not configured):
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
        logger.addHandler(handler)
        logger.propagate = False
    return logger


@dataclass
class LoggingSetup:
    """What `setup_logging()` changed, so an embedded server can undo it when it stops."""

    added: list[tuple[logging.Logger, logging.Handler]] = field(default_factory=list)
    previous: list[tuple[logging.Logger, int, bool]] = field(default_factory=list)

    def remember(self, logger: logging.Logger) -> None:
        """Record the level and propagation of `logger` before rustwsgi changes them."""
        if all(known is not logger for known, _, _ in self.previous):
            self.previous.append((logger, logger.level, logger.propagate))

    def add(self, logger: logging.Logger, handler: logging.Handler, formatter: logging.Formatter) -> None:
        """Attach `handler` to `logger` and stop its records from also reaching the root logger's handlers."""
        self.remember(logger)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.propagate = False
        self.added.append((logger, handler))

    def close(self) -> None:
        """Remove and close the handlers rustwsgi added, and restore the loggers' levels and propagation."""
        for logger, handler in reversed(self.added):
            logger.removeHandler(handler)
            handler.close()
        for logger, level, propagate in self.previous:
            logger.setLevel(level)
            logger.propagate = propagate
        self.added.clear()
        self.previous.clear()


def _handler(path: str, stream: Any) -> logging.Handler:
    if path == '-':
        return _StreamHandler(stream)
    try:
        return _FileHandler(path, encoding='utf-8')
    except OSError as exc:
        raise ConfigError(f'cannot open log file {path}: {exc.strerror or exc}') from None


def load_log_config(path: str) -> dict[str, Any]:
    """Read a `logging.config.dictConfig` dictionary from a JSON (`.json`) or TOML (`.toml`) file."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == '.json':
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
        elif suffix == '.toml':
            data = read_toml(path)
        else:
            raise ConfigError(f'log config {path}: expected a .json or .toml file')
    except OSError as exc:
        raise ConfigError(f'cannot read log config {path}: {exc.strerror or exc}') from None
    except ValueError as exc:
        raise ConfigError(f'log config {path}: {exc}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'log config {path}: expected a JSON object or TOML table at the top')
    data.setdefault('version', 1)
    # Loggers the file does not name (rustwsgi's own among them) must keep working.
    data.setdefault('disable_existing_loggers', False)
    return data


def _named_loggers(log_config: Mapping[str, Any]) -> set[str]:
    loggers = log_config.get('loggers')
    return set(loggers) if isinstance(loggers, Mapping) else set()


def setup_logging(config: Config, *, force: bool) -> LoggingSetup:
    """Configure `rustwsgi.error` and `rustwsgi.access` from `config` and return what was changed.

    `--log-config` is applied first; rustwsgi's defaults (error lines to `--error-logfile`) then fill in for the
    loggers it does not name. `--access-logfile` always adds its handler. With `force=False` (the Python API) an
    application that already configured logging keeps its handlers for `rustwsgi.error` when the log file is `-`.
    """
    setup = LoggingSetup()
    named: set[str] = set()
    if config.log_config is not None:
        log_config = load_log_config(config.log_config)
        named = _named_loggers(log_config)
        from logging import config as logging_config  # only with --log-config: it pulls in socketserver and more

        try:
            logging_config.dictConfig(log_config)
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise ConfigError(f'log config {config.log_config}: {exc}') from None

    error = logging.getLogger(ERROR_LOGGER)
    if not named & {ERROR_LOGGER, 'rustwsgi'}:
        setup.remember(error)
        error.setLevel(config.log_level.upper())
        ours = any(isinstance(handler, _RustwsgiHandler) for handler in error.handlers)
        configured = bool(error.handlers or logging.getLogger().handlers)
        if config.error_logfile != '-' or (not ours and (force or not configured)):
            handler = _handler(config.error_logfile, sys.stderr)
            setup.add(error, handler, logging.Formatter(LOG_FORMAT, LOG_DATEFMT))

    if config.access_logfile is not None:
        access = logging.getLogger(ACCESS_LOGGER)
        setup.remember(access)
        access.setLevel(logging.INFO)
        setup.add(access, _handler(config.access_logfile, sys.stdout), _MessageFormatter())
    return setup


def access_enabled(config: Config) -> bool:
    """True when access lines would be written somewhere: an `--access-logfile`, a handler on `rustwsgi.access`,
    or a `--log-config` under which `rustwsgi.access` emits INFO records to some handler."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if logger.disabled or not logger.isEnabledFor(logging.INFO):
        return False
    if config.access_logfile is not None or logger.handlers:
        return True
    return config.log_config is not None and logger.hasHandlers()


def access_hook(config: Config) -> AccessHook | None:
    """The callable the Rust core calls after each response, or None when access logging is off."""
    if not access_enabled(config):
        return None
    logger = logging.getLogger(ACCESS_LOGGER)
    line = _json_line if config.access_logformat == JSON_FORMAT else compile_access_format(config.access_logformat)
    enabled, make_record, handle = logger.isEnabledFor, logger.makeRecord, logger.handle
    clock = time.time
    info = logging.INFO

    def log_access(environ: dict[str, Any], status: str, body_bytes: int, seconds: float) -> None:
        if not enabled(info):
            return
        text = line(environ, status, body_bytes, seconds, clock() - seconds)
        handlers = logger.handlers
        if len(handlers) == 1 and _only_reader(logger, handlers[0]):
            try:
                handlers[0].write_line(text)  # type: ignore[attr-defined]
            except (OSError, ValueError):
                pass  # the record path below reports the failure the way logging does
            else:
                return
        # As logger.info() does, minus the caller lookup (a stack walk) that an access line never uses.
        handle(make_record(ACCESS_LOGGER, info, '', 0, text, None, None))

    return log_access


def _only_reader(logger: logging.Logger, handler: logging.Handler) -> bool:
    """True when `handler`, one of ours, is all that would see an INFO record of `logger`: no filters, no other
    handler, no propagation. The record can then be skipped, which halves the cost of an access line."""
    return (
        isinstance(handler, _LineHandler)
        and not logger.propagate
        and not logger.filters
        and not logger.disabled
        and not handler.filters
        and handler.level <= logging.INFO
    )


# ---- atoms ----------------------------------------------------------------------------------------------------------


class _ClfTime:
    """`[10/Oct/2000:13:55:36 -0700]` in local time, computed once per second (month names never localized)."""

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, '')

    def __call__(self, when: float) -> str:
        second = int(when)
        cached_second, text = self._cached
        if cached_second == second:
            return text
        local = time.localtime(second)
        offset = local.tm_gmtoff or 0
        sign = '-' if offset < 0 else '+'
        hours, minutes = divmod(abs(offset) // 60, 60)
        text = (
            f'[{local.tm_mday:02d}/{_MONTHS[local.tm_mon - 1]}/{local.tm_year}:'
            f'{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} {sign}{hours:02d}{minutes:02d}]'
        )
        self._cached = (second, text)  # one assignment: readers on other threads see a consistent pair
        return text


class _IsoTime:
    """`2000-10-10T20:55:36.123Z` (UTC, milliseconds); the seconds part is computed once per second."""

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, '')

    def __call__(self, when: float) -> str:
        second = int(when)
        cached_second, text = self._cached
        if cached_second != second:
            text = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))
            self._cached = (second, text)
        return f'{text}.{int((when - second) * 1000):03d}Z'


def _percent_encode(match: re.Match[str]) -> str:
    char = match.group()
    return ''.join(f'%{byte:02X}' for byte in char.encode('latin-1' if ord(char) < 256 else 'utf-8'))


def _path(environ: Environ) -> str:
    """The request path as sent (SCRIPT_NAME + PATH_INFO, re-encoded where it is not printable ASCII)."""
    path = environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', '')
    return _UNSAFE_IN_PATH.sub(_percent_encode, path) if _UNSAFE_IN_PATH.search(path) else path


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return '\\' + char
    return f'\\x{ord(char):02x}' if ord(char) < 256 else f'\\u{ord(char):04x}'


def _clean(value: str) -> str:
    """A client-supplied value made safe for a text log line (Apache's escaping)."""
    return _UNSAFE_IN_VALUE.sub(_escape, value) if _UNSAFE_IN_VALUE.search(value) else value


def _user(environ: Environ) -> str:
    auth = environ.get('HTTP_AUTHORIZATION', '')
    if auth[:6].lower() == 'basic ':
        try:
            user = base64.b64decode(auth[6:].strip(), validate=True).decode('latin-1').split(':', 1)[0]
        except (binascii.Error, ValueError):
            return '-'
        return _clean(user) or '-'
    return _clean(environ.get('REMOTE_USER') or '-')


def _request_line(environ: Environ) -> str:
    query = environ.get('QUERY_STRING', '')
    target = _path(environ) + ('?' + _UNSAFE_IN_PATH.sub(_percent_encode, query) if query else '')
    return f'{_clean(environ.get("REQUEST_METHOD", "-"))} {target} {environ.get("SERVER_PROTOCOL", "-")}'


def _status_code(status: str) -> str:
    return status[:3] or '-'


def _header_key(name: str) -> str:
    key = name.upper().replace('-', '_')
    return key if key in ('CONTENT_TYPE', 'CONTENT_LENGTH') else 'HTTP_' + key


def _environ_atom(key: str) -> Atom:
    def atom(environ: Environ, status: str, size: int, seconds: float, start: float) -> str:
        value = environ.get(key)
        return '-' if value is None or value == '' else _clean(str(value))

    return atom


_clf_time = _ClfTime()
_iso_time = _IsoTime()

ATOMS: dict[str, Atom] = {
    'h': lambda env, status, size, seconds, start: env.get('REMOTE_ADDR') or '-',
    'l': lambda env, status, size, seconds, start: '-',
    'u': lambda env, status, size, seconds, start: _user(env),
    't': lambda env, status, size, seconds, start: _clf_time(start),
    'r': lambda env, status, size, seconds, start: _request_line(env),
    'm': lambda env, status, size, seconds, start: _clean(env.get('REQUEST_METHOD', '-')),
    'U': lambda env, status, size, seconds, start: _path(env),
    'q': lambda env, status, size, seconds, start: _UNSAFE_IN_PATH.sub(_percent_encode, env.get('QUERY_STRING', '')),
    'H': lambda env, status, size, seconds, start: env.get('SERVER_PROTOCOL', '-'),
    's': lambda env, status, size, seconds, start: _status_code(status),
    'B': lambda env, status, size, seconds, start: str(size),
    'b': lambda env, status, size, seconds, start: str(size) if size else '-',
    'f': lambda env, status, size, seconds, start: _clean(env.get('HTTP_REFERER') or '-'),
    'a': lambda env, status, size, seconds, start: _clean(env.get('HTTP_USER_AGENT') or '-'),
    'T': lambda env, status, size, seconds, start: str(int(seconds)),
    'D': lambda env, status, size, seconds, start: str(int(seconds * 1_000_000)),
    'M': lambda env, status, size, seconds, start: str(int(seconds * 1000)),
    'L': lambda env, status, size, seconds, start: f'{seconds:.6f}',
    'p': lambda env, status, size, seconds, start: f'<{os.getpid()}>',
}
"""gunicorn's access log atoms; `%({name}i)s` (request header) and `%({name}e)s` (environ key) come on top."""


def _atom(key: str) -> Atom:
    if key in ATOMS:
        return ATOMS[key]
    if key.startswith('{') and key.endswith('}i'):
        return _environ_atom(_header_key(key[1:-2]))
    if key.startswith('{') and key.endswith('}e'):
        return _environ_atom(key[1:-2])
    if key.startswith('{') and key.endswith('}o'):
        raise ConfigError(f'response header atoms such as %({key})s are not supported')
    raise ConfigError(f'unknown atom %({key})s; known: {", ".join(ATOMS)}, %({{header}}i)s, %({{key}}e)s')


def compile_access_format(fmt: str) -> Callable[[Environ, str, int, float, float], str]:
    """Turn a gunicorn-style format into a function computing only the atoms the format uses."""
    atoms = {key: _atom(key) for key in _ATOM_KEY.findall(fmt)}
    try:
        sample = fmt % {key: f'<{key}>' for key in atoms}
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f'invalid format {fmt!r}: {exc}') from None
    # When every atom is a plain `%(key)s`, a tuple is filled instead of a dict (cheaper per line).
    positional = _ATOM_S.sub('%s', fmt)
    keys = _ATOM_S.findall(fmt)
    try:
        plain = positional % tuple(f'<{key}>' for key in keys) == sample
    except (TypeError, ValueError):
        plain = False
    if plain:
        in_order = [atoms[key] for key in keys]

        def fill_tuple(environ: Environ, status: str, size: int, seconds: float, start: float) -> str:
            return positional % tuple([atom(environ, status, size, seconds, start) for atom in in_order])

        return fill_tuple

    def fill_dict(environ: Environ, status: str, size: int, seconds: float, start: float) -> str:
        return fmt % {key: atom(environ, status, size, seconds, start) for key, atom in atoms.items()}

    return fill_dict


def check_access_format(value: Any) -> str:
    """A valid `--access-logformat`: `json`, or a format string whose atoms are all known."""
    text = str(value)
    if not text.strip():
        raise ConfigError('must not be empty')
    if text.strip().lower() == JSON_FORMAT:
        return JSON_FORMAT
    compile_access_format(text)
    return text


def _json_string(value: str | None) -> str:
    return 'null' if value is None else _quote(value)


def _json_line(environ: Environ, status: str, size: int, seconds: float, start: float) -> str:
    """One JSON object, built directly: every string goes through json's own escaping (ASCII output)."""
    code = status[:3]
    query = environ.get('QUERY_STRING', '')
    # A proxy's id ties our line to its own; without one, a fresh id still tells requests apart.
    request_id = environ.get('HTTP_X_REQUEST_ID') or os.urandom(8).hex()
    return (
        f'{{"time":"{_iso_time(start)}","remote_addr":{_json_string(environ.get("REMOTE_ADDR") or None)},'
        f'"method":{_json_string(environ.get("REQUEST_METHOD"))},"path":{_quote(_path(environ))},'
        f'"query":{_quote(_UNSAFE_IN_PATH.sub(_percent_encode, query) if query else "")},'
        f'"protocol":{_json_string(environ.get("SERVER_PROTOCOL"))},'
        f'"status":{int(code) if code.isascii() and code.isdigit() else "null"},"bytes":{int(size)},'
        f'"duration":{seconds:.6f},"request_id":{_quote(request_id)},'
        f'"user_agent":{_json_string(environ.get("HTTP_USER_AGENT"))},'
        f'"referer":{_json_string(environ.get("HTTP_REFERER"))}}}'
    )
