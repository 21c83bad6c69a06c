"""This process's place among the workers serving one ledger.

Each ``steward run`` (or ``steward chat``) holds the lowest free slot of its home: an
exclusive lock on a numbered file under ``STEWARD_HOME/workers``, which the operating
system lets go when the process ends, however it ends. The file keeps the name the slot
goes by in the ledger, made once at random, so a process restarted after a crash (in a
new container too, on the same volume) is the same worker again and takes up at once
what it held, while a process in another home is never mistaken for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from pathlib import Path

SHELL = "shell:"  # how the name of a shell command's worker begins
SHELL_FILE = "shell-"  # and its slot's file


class WorkerSlot:
    def __init__(self, worker: str, handle: int) -> None:
        self.worker = worker
        self._handle = handle

    @classmethod
    def claim(cls, home: Path) -> WorkerSlot:
        folder = _slots(home)
        slot = 0
        while True:
            handle = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                slot += 1
                continue
            try:
                return cls(f"{_name(handle)}#{slot}", handle)
            except BaseException:
                os.close(handle)
                raise

    def release(self) -> None:
        if self._handle >= 0:
            os.close(self._handle)  # closing the file lets the lock go
            self._handle = -1


def _name(handle: int) -> str:
    """The slot's name, kept in its file; made when there is none (a new slot)."""
    kept = os.pread(handle, 64, 0).decode("ascii", "replace").strip()
    if len(kept) == 32 and all(c in "0123456789abcdef" for c in kept):
        return kept
    made = uuid.uuid4().hex
    os.ftruncate(handle, 0)
    os.pwrite(handle, made.encode("ascii"), 0)
    os.fsync(handle)
    return made


class ShellSlot:
    """A shell command's place among the workers while it moves runs: a lock file of its
    own under ``STEWARD_HOME/workers``, held while it lives. A service that can take the
    lock knows the command is gone (killed, however), and takes its runs up at once, not
    a lease later (see ``gone_shells``)."""

    def __init__(self, path: Path, handle: int) -> None:
        self.worker = _shell_worker(path)
        self._path = path
        self._handle = handle

    @classmethod
    def claim(cls, home: Path) -> ShellSlot:
        """The slot's file is locked under a name ``gone_shells`` passes over, then given
        its own: found unlocked between its making and its lock, it was taken for a
        command gone."""
        name = f"{SHELL_FILE}{uuid.uuid4().hex}.lock"
        making, path = _slots(home) / f".{name}", _slots(home) / name
        handle = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            making.rename(path)
        except BaseException:
            os.close(handle)
            making.unlink(missing_ok=True)
            raise
        return cls(path, handle)

    def release(self) -> None:
        if self._handle >= 0:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            os.close(self._handle)
            self._handle = -1


def gone_shells(home: Path) -> list[str]:
    """The workers of the shell commands of this home that ended without letting go of
    their slot (killed); each slot's file is removed."""
    gone = []
    for path in _slots(home).glob(f"{SHELL_FILE}*.lock"):
        try:
            handle = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # let go meanwhile
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            continue  # its command lives
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(handle)
        gone.append(_shell_worker(path))
    return gone


def _slots(home: Path) -> Path:
    """The folder of the slots' files, made when there is none."""
    folder = home / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shell_worker(path: Path) -> str:
    """The worker a shell command's slot file stands for."""
    return f"{SHELL}{path.stem.removeprefix(SHELL_FILE)}"
