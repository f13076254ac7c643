"""Find the WSGI application named by TARGET, the way gunicorn users expect.

TARGET forms:
  `module:attr`       attr may be dotted (`pkg.wsgi:app.wsgi_app`)
  `module`            looks for `application`, then `app`
  `module:factory()`  calls the factory; literal arguments are allowed (`create_app('prod', debug=False)`)
  `module:attr` with `--factory` calls attr with no arguments.

`prepare_path()` applies `--chdir` and `--pythonpath` and puts the working directory on sys.path first.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import AppImportError, ConfigError

__all__ = ['DEFAULT_NAMES', 'load_app', 'parse_target', 'prepare_path']

DEFAULT_NAMES = ('application', 'app')

log = logging.getLogger('rustwsgi.error')


def prepare_path(chdir: str | None = None, pythonpath: Sequence[str] = ()) -> None:
    """Change directory (`--chdir`), then put the `--pythonpath` dirs and the working directory at sys.path's front.

    The working directory goes on sys.path as gunicorn does it, so `rustwsgi serve app:app` finds `./app.py` even
    when started through the console script. Relative `--pythonpath` entries are taken from the new directory.
    """
    if chdir is not None:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise ConfigError(f'cannot chdir to {chdir!r}: {exc.strerror}') from None
    front = [os.path.abspath(path) for path in pythonpath]
    front.append(os.getcwd())
    for path in front:
        while path in sys.path:
            sys.path.remove(path)
    sys.path[:0] = front


def _error_text(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'


def parse_target(target: str) -> tuple[str, str | None, ast.Call | None]:
    """Split TARGET into (module, attribute path or None, call expression or None).

    Raises `AppImportError` when TARGET is not of a supported form.
    """
    module, sep, obj = target.strip().partition(':')
    if not module or (sep and not obj.strip()):
        raise AppImportError(f'invalid target {target!r}: expected MODULE, MODULE:ATTR or MODULE:FACTORY()')
    if not sep:
        return module, None, None
    try:
        expr = ast.parse(obj.strip(), mode='eval').body
    except SyntaxError:
        raise AppImportError(f'invalid target {target!r}: {obj!r} is not an attribute name or a call') from None
    call = expr if isinstance(expr, ast.Call) else None
    name = _dotted_name(call.func if call else expr)
    if name is None:
        raise AppImportError(f'invalid target {target!r}: {obj!r} is not an attribute name or a call')
    return module, name, call


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f'{base}.{node.attr}' if base else None
    return None


def _call_arguments(target: str, call: ast.Call) -> tuple[list[Any], dict[str, Any]]:
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
    except ValueError:
        raise AppImportError(f'invalid target {target!r}: factory arguments must be Python literals') from None
    if any(kw.arg is None for kw in call.keywords):
        raise AppImportError(f'invalid target {target!r}: factory arguments must be Python literals')
    return args, kwargs


def _import(target: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        log.debug('Importing %r failed', module_name, exc_info=True)
        raise AppImportError(f'cannot import {target!r}: {_error_text(exc)}') from exc


def _resolve(target: str, module: Any, name: str | None) -> Any:
    if name is None:
        for candidate in DEFAULT_NAMES:
            if hasattr(module, candidate):
                return getattr(module, candidate)
        raise AppImportError(
            f'cannot import {target!r}: module {module.__name__!r} has no attribute '
            + ' or '.join(repr(n) for n in DEFAULT_NAMES)
        )
    obj = module
    for part in name.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise AppImportError(f'cannot import {target!r}: {_error_text(exc)}') from exc
    return obj


def _call_factory(target: str, factory: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if not callable(factory):
        raise AppImportError(f'cannot load {target!r}: the factory is a {type(factory).__name__}, not callable')
    try:
        return factory(*args, **kwargs)
    except Exception as exc:
        log.debug('Factory %r failed', target, exc_info=True)
        raise AppImportError(f'cannot load {target!r}: the factory raised {_error_text(exc)}') from exc


def load_app(target: str, *, factory: bool = False) -> Callable[..., Any]:
    """Import TARGET and return the WSGI callable it names (calling the factory if asked).

    Raises `AppImportError` with a one-line message naming TARGET and the underlying exception.
    """
    module_name, name, call = parse_target(target)
    if factory and call is not None:
        raise AppImportError(f'invalid target {target!r}: use either --factory or call syntax, not both')
    if factory and name is None:
        raise AppImportError(f'invalid target {target!r}: --factory needs MODULE:FACTORY')
    module = _import(target, module_name)
    obj = _resolve(target, module, name)
    if call is not None:
        args, kwargs = _call_arguments(target, call)
        obj = _call_factory(target, obj, args, kwargs)
    elif factory:
        obj = _call_factory(target, obj, [], {})
    if not callable(obj):
        raise AppImportError(f'cannot load {target!r}: a WSGI application must be callable, got {type(obj).__name__}')
    app: Callable[..., Any] = obj
    return app
