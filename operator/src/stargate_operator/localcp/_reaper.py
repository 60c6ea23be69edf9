"""Watchdog that ends the control plane's process groups when the Python process that owns them dies.

Run as a script (standard library only, so it starts in milliseconds and needs no import path):
``python _reaper.py``. The owner writes ``+PGID`` and ``-PGID`` lines to our stdin as it starts and
stops etcd and kube-apiserver. When stdin reaches end of file, the owner has gone: normally because it
closed the pipe after a clean stop (then nothing is registered any more), otherwise because it was
killed, even with SIGKILL, which no ``atexit`` handler or signal handler survives. The kernel closes a
dead process's pipes, so end of file is the one death notice that needs neither ``prctl`` (Linux
only, and tied to the thread that forked) nor polling. We then send SIGTERM to every group still
registered, wait a little, and SIGKILL what is left.

The reaper runs in a session of its own so that a Ctrl-C in the terminal, which reaches the whole
foreground process group, cannot end it before it has done its job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

GRACE_SECONDS = 5.0


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The group id now belongs to someone else's processes: not ours to end.
        return False
    return True


def _signal(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if len(line) > 1 and line[0] in "+-" and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    # End of file: the owner is gone.
    live = {g for g in groups if _alive(g)}
    for g in live:
        _signal(g, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = {g for g in live if _alive(g)}
    for g in live:
        _signal(g, signal.SIGKILL)


if __name__ == "__main__":
    main()
