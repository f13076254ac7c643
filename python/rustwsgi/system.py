"""Operating-system plumbing shared by the single-process server and the supervisor.

systemd socket activation (`LISTEN_FDS`), the `--pid` file and the Linux parent-death signal.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys

from .errors import RustwsgiError

__all__ = ['PidFile', 'set_parent_death_signal', 'systemd_sockets']

SD_LISTEN_FDS_START = 3  # systemd passes its sockets as descriptors 3, 4, ...
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def systemd_sockets() -> list[socket.socket]:
    """The listening sockets passed by systemd socket activation, or [] when there are none.

    They are taken only when `LISTEN_PID` names this process, as sd_listen_fds(3) does; the `LISTEN_*` variables
    are then removed from the environment so that the workers and the application do not see them.
    """
    if os.environ.get('LISTEN_PID') != str(os.getpid()):
        return []
    count_text = os.environ.get('LISTEN_FDS', '')
    for name in ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'):
        os.environ.pop(name, None)
    try:
        count = int(count_text)
    except ValueError:
        raise RustwsgiError(f'LISTEN_FDS must be a number, got {count_text!r}') from None
    sockets: list[socket.socket] = []
    try:
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
            try:
                sockets.append(socket.socket(fileno=fd))
            except OSError as exc:
                raise RustwsgiError(f'LISTEN_FDS: descriptor {fd} is not a socket ({exc.strerror})') from None
            sock = sockets[-1]
            if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise RustwsgiError(f'LISTEN_FDS: descriptor {fd} is not a listening stream socket')
            os.set_inheritable(fd, False)
    except RustwsgiError:
        # The descriptors stay systemd's: leave them open.
        for sock in sockets:
            sock.detach()
        raise
    return sockets


class PidFile:
    """The `--pid` file: written atomically with this process's id, removed at exit if it still holds that id."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid = 0

    def write(self) -> None:
        """Write the current pid; raises `RustwsgiError` when the file cannot be written."""
        import tempfile  # only when a pid file is asked for; it pulls in shutil, random and more

        self.pid = os.getpid()
        try:
            fd, tmp = tempfile.mkstemp(prefix='.rustwsgi-pid-', dir=os.path.dirname(self.path))
        except OSError as exc:
            raise RustwsgiError(f'cannot write pid file {self.path}: {exc.strerror}') from None
        try:
            with os.fdopen(fd, 'w') as file:
                os.fchmod(file.fileno(), 0o644)
                file.write(f'{self.pid}\n')
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise RustwsgiError(f'cannot write pid file {self.path}: {exc.strerror}') from None

    def remove(self) -> None:
        """Remove the file, unless another process has written its own pid into it since."""
        if not self.pid:
            return
        with contextlib.suppress(OSError, ValueError):
            with open(self.path) as file:
                if int(file.read().strip() or 0) != self.pid:
                    return
            os.unlink(self.path)
        self.pid = 0


def set_parent_death_signal(signum: int) -> None:
    """Ask Linux to send `signum` to this process when its parent exits (prctl PR_SET_PDEATHSIG); no-op elsewhere."""
    if not sys.platform.startswith('linux'):
        return
    import ctypes  # only on Linux, and only in processes that ask for it

    try:
        # dlopen(NULL): the C library the interpreter is linked with.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return
