"""One writer per results directory: an exclusive lock file for the life of a run.

``OUT/.lock`` holds the holder's pid, host, start time and command, created with O_EXCL (atomic on a local
filesystem). A second run on the same ``--out`` is refused with a message naming the holder; a lock whose
process is gone (same host, pid not alive) is stale and taken over. ``shared run`` holds the lock and its
suite children re-enter it (the holder is their parent).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """Another live run holds the results directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def ancestors() -> set[int]:
    """This process and every parent up to init (from /proc; the parent alone elsewhere)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            pids.add(os.getppid())
            break
    return pids


class RunLock:
    """``with RunLock(out_dir):`` ... ; re-entrant for the holder's own descendants."""

    def __init__(self, out_dir, command: str | None = None):
        self.path = Path(out_dir) / LOCK_NAME
        self.command = command or " ".join(sys.argv)
        self.owned = False
        self.made: list[Path] = []

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        # a directory made only to hold the lock goes again on release if the run wrote nothing into it
        self.made = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "command": self.command}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.holder()
                if held is None:  # being written this instant, or garbage: garbage is stale
                    time.sleep(0.2)
                    held = self.holder()
                if held and held.get("host") == me["host"] and held.get("pid") in ancestors():
                    return self  # our parent's lock (shared run -> suite): re-entered, not owned
                if held and (held.get("host") != me["host"] or _alive(int(held.get("pid", -1)))):
                    raise LockedError(
                        f"{self.path.parent} is in use by another run: pid {held.get('pid')} on {held.get('host')}, "
                        f"started {held.get('started')} ({held.get('command')}). Wait for it to finish, or give this "
                        f"run another --out; if that process is gone, delete {self.path}.") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.owned = True
            return self
        raise LockedError(f"could not take the lock {self.path}: another run keeps recreating it")

    def release(self) -> None:
        if self.owned:
            held = self.holder()
            if held and held.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.owned = False
            for p in sorted(self.made, key=lambda p: len(p.parts), reverse=True):
                try:
                    p.rmdir()  # only if empty
                except OSError:
                    break

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
