"""The Rust core of rustwsgi: the HTTP/1.1 server and the WSGI bridge.

Python creates and binds the listening sockets and hands them over by file descriptor; Rust dup()s each one, so
the Python socket objects may be closed once `Server` exists. The classes are final and built by `__new__`
(PyO3 classes).
"""

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeAlias, final

from typing_extensions import Self

__all__ = ['FileWrapper', 'Input', 'Server', 'StartResponse', '__version__']

__version__: str

_ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType]
_WSGIApp: TypeAlias = Callable[[dict[str, Any], 'StartResponse'], Iterable[bytes]]

@final
class Server:
    """A running (or ready to run) HTTP server: an event loop thread plus a pool of worker threads."""

    def __new__(
        cls,
        app: _WSGIApp,
        listeners: list[tuple[int, bool, dict[str, Any]]],
        config: dict[str, Any],
    ) -> Self:
        """Take over the listening sockets and prepare to serve `app`; nothing runs until `start()`.

        `listeners`: one `(fd, is_unix, base_environ)` per bound, listening socket. `base_environ` is the constant
        part of environ for that listener; it is copied for each request and never mutated.
        `config`: exactly the keys `threads` (int >= 1), `keep_alive` (float seconds), `limit_request_line`,
        `limit_request_fields`, `limit_request_field_size` and `limit_request_body` (ints; body 0 = unlimited).
        """

    def start(self) -> None:
        """Start the event loop and worker threads, and return at once."""

    def wait(self, timeout: float) -> bool:
        """Block for up to `timeout` seconds without holding the GIL; True once the server has fully stopped."""

    def shutdown(self, graceful: bool = True) -> None:
        """Ask the server to stop; thread-safe (callable from a signal handler) and returns at once.

        Graceful: stop accepting and finish requests in progress; otherwise close connections now.
        """

    def connection_count(self) -> int:
        """The number of open client connections."""

@final
class FileWrapper:
    """`environ['wsgi.file_wrapper']`: wraps a file so the server may send it with sendfile(2)."""

    def __new__(cls, filelike: Any, blksize: int = 8192) -> Self: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...

@final
class Input:
    """`environ['wsgi.input']`: the request body, already de-chunked; reads past the end return b''."""

    def read(self, size: int | None = None) -> bytes: ...
    def readline(self, size: int | None = None) -> bytes: ...
    def readlines(self, hint: int | None = None) -> list[bytes]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> bytes: ...

@final
class StartResponse:
    """The `start_response` callable passed to the application for one request."""

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
    ) -> Callable[[bytes], None]: ...
    def write(self, data: bytes) -> None:
        """The PEP 3333 `write()` callable (returned by `__call__`)."""
