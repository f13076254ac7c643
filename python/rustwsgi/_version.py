"""The installed rustwsgi version, read once."""

from __future__ import annotations

from importlib import metadata


def _read_version() -> str:
    try:
        from ._rustwsgi import __version__ as built
    except ImportError:
        pass
    else:
        return built
    try:
        return metadata.version('rustwsgi')
    except metadata.PackageNotFoundError:
        return '0+unknown'


__version__ = _read_version()
