"""The installed rustwsgi version, read once."""

from __future__ import annotations


def _read_version() -> str:
    try:
        from ._rustwsgi import __version__ as built
    except ImportError:
        pass
    else:
        return built
    # Only without the extension: importlib.metadata (and the email package it loads) costs several MiB of RSS.
    from importlib import metadata

    try:
        return metadata.version('rustwsgi')
    except metadata.PackageNotFoundError:
        return '0+unknown'


__version__ = _read_version()
