"""The one-file executable's gateway lives no longer than the launcher the user started.

`dist/e2a` runs as two processes: PyInstaller's launcher, which unpacked the executable into
a temporary folder, and its child, which runs e2a. The launcher passes signals on, but nothing
can pass on a SIGKILL: a supervisor or an operator that kills the process it started (the
launcher) left the child serving, holding the SMTP and HTTP ports and the database, so that
the next start failed on them. A `pip install` has one process, which SIGKILL ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent ends."""


def die_with_launcher() -> None:
    """In the one-file executable's child on Linux, have the kernel SIGKILL this process when
    the launcher ends; exit at once if it has ended already. Anywhere else: nothing."""
    if not getattr(sys, "frozen", False) or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    try:
        started_by_launcher = os.readlink(f"/proc/{launcher}/exe") == os.readlink("/proc/self/exe")
    except OSError:  # the parent is someone else's process, or /proc is hidden
        return
    if not started_by_launcher:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != launcher:  # the launcher ended before the request took effect
        os._exit(1)
