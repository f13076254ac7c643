"""Exceptions raised by rustwsgi's Python layer.

Every error rustwsgi raises on purpose derives from `RustwsgiError`, so callers of the Python API can catch them all
at once. The CLI turns each into one line on stderr and an exit status.
"""

from __future__ import annotations

__all__ = ['AppImportError', 'BindError', 'ConfigError', 'RustwsgiError']


class RustwsgiError(Exception):
    """Base class of every error rustwsgi raises on purpose."""


class ConfigError(RustwsgiError, ValueError):
    """A setting has a value that cannot be used (bad flag value, bad environment variable, bad argument)."""


class AppImportError(RustwsgiError, ImportError):
    """The WSGI application named by TARGET could not be imported, found, built or is not callable."""


class BindError(RustwsgiError, OSError):
    """A listening socket could not be created; `errno` and `strerror` are those of the failed system call.

    `address` is the address as rustwsgi prints it (`127.0.0.1:8000`, `[::1]:8000`, `unix:/path`).
    """

    def __init__(self, address: str, error: OSError) -> None:
        if error.errno is None:
            super().__init__(str(error))
        else:
            super().__init__(error.errno, error.strerror)
        self.address = address

    def __str__(self) -> str:
        return f'cannot bind {self.address}: {super().__str__()}'
