"""Settings from a file: `-c/--config PATH`, else `rustwsgi.toml`, else `[tool.rustwsgi]` in `pyproject.toml`.

The two default files are looked up in the working directory. Keys are the setting names of `rustwsgi.config`
(`threads`, `keep_alive`, `bind`, ...) and values are TOML values (`bind` may be a string or an array). Which keys
are known is decided by `Config.resolve()`; this module only finds and reads the file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ['PYPROJECT', 'RUSTWSGI_TOML', 'ConfigFile', 'find_config_file', 'load_config_file', 'read_toml']

RUSTWSGI_TOML = 'rustwsgi.toml'
PYPROJECT = 'pyproject.toml'


@dataclass(frozen=True)
class ConfigFile:
    """The settings table of one file, as read (values not yet converted)."""

    path: str
    values: dict[str, Any]


def _toml() -> Any:
    """The TOML parser, imported on first use (it is most of a megabyte of memory a process without a config file
    does not need)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as the `tomli` package
        import tomli as tomllib
    return tomllib


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; raises OSError, or ValueError (`tomllib.TOMLDecodeError`) for bad syntax."""
    with open(path, 'rb') as handle:
        return _toml().load(handle)


def _pyproject_table(data: dict[str, Any]) -> dict[str, Any] | None:
    tool = data.get('tool')
    table = tool.get('rustwsgi') if isinstance(tool, dict) else None
    return table if isinstance(table, dict) else None


def _read(path: Path) -> dict[str, Any]:
    toml = _toml()
    try:
        return read_toml(path)
    except OSError as exc:
        raise ConfigError(f'cannot read config file {path}: {exc.strerror or exc}') from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f'{path}: invalid TOML: {exc}') from None


def load_config_file(path: str | Path) -> ConfigFile:
    """Read the settings of `path`: the `[tool.rustwsgi]` table of a `pyproject.toml`, else the whole file."""
    file = Path(path)
    data = _read(file)
    if file.name == PYPROJECT:
        table = _pyproject_table(data)
        if table is None:
            raise ConfigError(f'{file}: no [tool.rustwsgi] table')
        return ConfigFile(str(file), table)
    return ConfigFile(str(file), data)


def find_config_file(directory: str | Path = '.') -> ConfigFile | None:
    """The settings file of `directory`: `rustwsgi.toml`, else a `pyproject.toml` with `[tool.rustwsgi]`."""
    base = Path(directory)
    if (base / RUSTWSGI_TOML).is_file():
        return load_config_file(base / RUSTWSGI_TOML)
    pyproject = base / PYPROJECT
    if pyproject.is_file():
        table = _pyproject_table(_read(pyproject))
        if table is not None:
            return ConfigFile(str(pyproject), table)
    return None
