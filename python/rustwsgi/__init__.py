"""rustwsgi: a WSGI HTTP server for Python with a Rust core.

Command line: `rustwsgi serve module:app`. From Python: `rustwsgi.serve(app, bind='127.0.0.1:8000', threads=4)`,
or `rustwsgi.serve_in_background(app)` to serve from a thread (tests, embedding). For pytest, the `rustwsgi_server`
fixture comes with the package.
"""

from ._version import __version__
from .background import BackgroundServer, serve_in_background
from .config import Config
from .errors import AppImportError, BindError, ConfigError, RustwsgiError
from .server import serve

__all__ = [
    'AppImportError',
    'BackgroundServer',
    'BindError',
    'Config',
    'ConfigError',
    'RustwsgiError',
    '__version__',
    'serve',
    'serve_in_background',
]
