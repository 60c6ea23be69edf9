"""The demo's own subprocesses (operator, simulated agents): started, watched, stopped, never left behind.

Each child runs in a session and process group of its own, as the control plane's servers do, so a
Ctrl-C in the terminal reaches only the demo, which then stops the children in order: SIGTERM to the
group, a grace period, SIGKILL to what is left of the group. A watchdog (the control plane's
``_reaper.py``, a second instance for these groups) ends them if the demo itself dies without
stopping them, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stargate_operator.localcp import controlplane

_REAPER = Path(controlplane.__file__).with_name("_reaper.py")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Children:
    """A set of process groups with a watchdog; :meth:`stop_all` is idempotent."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._reaper: subprocess.Popen[str] | None = None

    def _tell_reaper(self, line: str) -> None:
        if self._reaper is None:
            self._reaper = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_REAPER)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                text=True, start_new_session=True,
            )
        if self._reaper.stdin is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.write(line + "\n")
                self._reaper.stdin.flush()

    def start(self, name: str, args: Sequence[str], *, log: Path, env: Mapping[str, str],
              cwd: Path | None = None) -> Child:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_file = log.open("ab")
        proc = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=dict(env), cwd=cwd, start_new_session=True,
        )
        self._tell_reaper(f"+{proc.pid}")
        child = Child(name, proc, log, log_file)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        """Children that exited although nobody stopped them."""
        return [c for c in self.children if not c.stopped and not c.running]

    def describe_death(self, child: Child) -> str:
        return f"{child.name} exited with code {child.proc.returncode}; log {child.log}:\n{_tail(child.log)}"

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every group at once, wait up to ``grace`` s for all, SIGKILL each group's remains."""
        live = [c for c in self.children if not c.stopped]
        for c in live:
            if c.running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            # The leader may be gone while something it started lives on in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.pid, signal.SIGKILL)
            c.proc.wait()
            c.stopped = True
            c.log_file.close()
            self._tell_reaper(f"-{c.pid}")
        if self._reaper is not None:
            with contextlib.suppress(OSError):
                assert self._reaper.stdin is not None
                self._reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
            self._reaper = None
