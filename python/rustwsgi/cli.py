"""The `rustwsgi` command: `rustwsgi serve TARGET [options]` and `rustwsgi --version`.

Every option flag is generated from the settings registry in `config.py`. Usage errors print one line and exit 2;
an application that cannot be loaded or an address that cannot be bound print one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._version import __version__
from .config import Config, Setting, settings
from .config_file import ConfigFile, find_config_file, load_config_file
from .errors import AppImportError, BindError, ConfigError, RustwsgiError
from .server import serve_target

__all__ = ['build_parser', 'main']

PROG = 'rustwsgi'

Runner = Callable[[str, Config], int]

SERVE_DESCRIPTION = """\
Serve the WSGI application named by TARGET over HTTP/1.1.

TARGET forms:
  module:attr        the callable `attr` of `module` (attr may be dotted: pkg.wsgi:app.wsgi_app)
  module             looks for `application`, then `app`
  module:factory()   calls factory() and serves what it returns; literal arguments are allowed
                     (`app:create_app('prod')`); --factory does the same for module:factory

Every option can also be set through the environment variable shown beside it (RUSTWSGI_<NAME>),
or in a TOML config file under its setting name (threads = 8, keep_alive = 10, bind = ["unix:/run/app.sock"]):
the file given with -c/--config, else ./rustwsgi.toml, else the [tool.rustwsgi] table of ./pyproject.toml.
A command-line flag wins over the environment, which wins over the config file, which wins over the default."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: `rustwsgi: error: ...`, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f'{PROG}: error: {message}\n')


def _argument_type(spec: Setting) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return spec.convert_value(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = spec.name
    return convert


def _add_setting(parser: argparse.ArgumentParser, spec: Setting) -> None:
    help_text = f'{spec.help} [env: {spec.env}; default: {spec.default_text()}]'.replace('%', '%%')
    if spec.kind == 'flag':
        parser.add_argument(*spec.flags, dest=spec.name, action='store_true', default=None, help=help_text)
        return
    parser.add_argument(
        *spec.flags,
        dest=spec.name,
        # A list option may be repeated, and each value may hold several comma-separated items.
        action='append' if spec.kind == 'list' else 'store',
        type=_argument_type(spec),
        default=None,
        metavar=spec.metavar,
        help=help_text,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `rustwsgi`, with `serve` options generated from the settings registry."""
    parser = _Parser(prog=PROG, description='rustwsgi: a WSGI HTTP server with a Rust core.')
    parser.add_argument('--version', action='version', version=f'{PROG} {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    serve = commands.add_parser(
        'serve',
        help='serve a WSGI application',
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument('target', metavar='TARGET', help='the WSGI application to serve, e.g. mysite.wsgi:application')
    serve.add_argument(
        '-c',
        '--config',
        dest='config_file',
        metavar='FILE',
        help='Read settings from this TOML file (from its [tool.rustwsgi] table if it is a pyproject.toml) instead '
        'of ./rustwsgi.toml or ./pyproject.toml.',
    )
    serve.add_argument(
        '--check-config',
        action='store_true',
        help='Print the effective settings, each with where its value came from, and exit without serving.',
    )
    for spec in settings():
        _add_setting(serve, spec)
    return parser


def _cli_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in settings():
        value = getattr(args, spec.name, None)
        if value is not None and spec.kind == 'list':
            value = tuple(item for group in value for item in group)
        values[spec.name] = value
    return values


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return '[' + ', '.join(_toml(item) for item in value) + ']'
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def describe_settings(config: Config, sources: dict[str, str], file: ConfigFile | None, target: str) -> str:
    """The `--check-config` report: one TOML line per setting, with its source as a comment."""
    lines = [
        f'# rustwsgi {__version__}: effective settings for {target}',
        f'# config file: {file.path if file is not None else "none"}',
        '# precedence: command line > environment > config file > default',
    ]
    for spec in settings():
        value = getattr(config, spec.name)
        text = f'# {spec.name} is not set' if value is None else f'{spec.name} = {_toml(value)}'
        lines.append(f'{text.ljust(40)}  # {sources[spec.name]}')
    return '\n'.join(lines)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def _fail(message: str, status: int) -> int:
    print(f'{PROG}: {message}', file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None, *, runner: Runner | None = None) -> int:
    """Run the `rustwsgi` command line and return the exit status.

    `runner(target, config)` serves the application; it defaults to `rustwsgi.server.serve_target` and is a
    parameter so tests can check parsing without starting a server.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return _exit_status(exc)
    try:
        file = load_config_file(args.config_file) if args.config_file else find_config_file()
        config, sources = Config.resolve(_cli_values(args), os.environ, file)
    except ConfigError as exc:
        return _fail(f'error: {exc}', 2)
    if args.check_config:
        print(describe_settings(config, sources, file, args.target))
        return 0

    try:
        return (runner or serve_target)(args.target, config)
    except ConfigError as exc:
        return _fail(f'error: {exc}', 2)
    except (AppImportError, BindError) as exc:
        return _fail(str(exc), 1)
    except (RustwsgiError, OSError) as exc:
        return _fail(f'error: {exc}', 1)
    except KeyboardInterrupt:
        return 130
