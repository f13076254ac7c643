"""rustwsgi: a WSGI HTTP server for Python with a Rust core.

Command line: `rustwsgi serve module:app`. From Python: `rustwsgi.serve(app, bind='127.0.0.1:8000', threads=4)`.
"""

from ._version import __version__
from .config import Config
from .errors import AppImportError, BindError, ConfigError, RustwsgiError
from .server import serve

__all__ = ['AppImportError', 'BindError', 'Config', 'ConfigError', 'RustwsgiError', '__version__', 'serve']
