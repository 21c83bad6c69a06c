"""This process's place among the workers serving one home's ledger.

Each ``steward run`` (or ``steward chat``) holds the lowest free slot: an exclusive lock
on a numbered file under ``STEWARD_HOME/workers``, which the operating system lets go
when the process ends, however it ends. The slot names the worker in the ledger, so a
process restarted after a crash is the same worker again and takes up at once what it
held; a second process beside it is another worker, and takes nothing of the first's
while that one lives.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from pathlib import Path


class WorkerSlot:
    def __init__(self, worker: str, handle: int) -> None:
        self.worker = worker
        self._handle = handle

    @classmethod
    def claim(cls, home: Path) -> WorkerSlot:
        folder = home.absolute() / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        slot = 0
        while True:
            handle = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                slot += 1
                continue
            place = str(folder.parent)
            if len(place) > 200:  # the ledger keeps 300 characters of a worker's name
                place = hashlib.sha256(place.encode()).hexdigest()
            return cls(f"{socket.gethostname()[:60]}:{place}#{slot}", handle)

    def release(self) -> None:
        if self._handle >= 0:
            os.close(self._handle)  # closing the file lets the lock go
            self._handle = -1
