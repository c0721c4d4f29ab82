"""Keeps the processes of a one-machine stack (`corral up`) running: one that exits when
nobody asked it to is started again after a short backoff with jitter, counted, and logged
with its exit status and the last lines of its log. One that keeps crashing is reported
loudly (`corral up`'s output, `corral status`) and retried at the longest backoff instead of
looping fast. The state is written to a JSON file that `corral status` reads."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 30.0
# This many quick exits within the window make a process crash-looping. An exit is quick when
# the process ran less than STABLE_RUN_S: only those grow the backoff, so a process that ran
# normally and then crashed is back at once, however often that has happened.
CRASH_LOOP_EXITS = 5
CRASH_WINDOW_S = 60.0
STABLE_RUN_S = 10.0
POLL_S = 0.1
LOG_TAIL_LINES = 20

RUNNING = "running"
RESTARTING = "restarting"
CRASH_LOOPING = "crash-looping"


class Processes(Protocol):
    """What the supervisor drives (LocalStack)."""

    def exit_code(self, label: str) -> int | None: ...
    def pid(self, label: str) -> int: ...
    def respawn(self, label: str) -> int: ...
    def labels(self) -> list[str]: ...
    def log_path(self, label: str) -> Path: ...


@dataclass
class ProcessState:
    pid: int = 0
    state: str = RUNNING
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: float | None = None
    exits: deque[float] = field(default_factory=deque, repr=False)  # quick ones
    restart_at: float | None = None
    started_at: float = field(default_factory=time.monotonic, repr=False)

    def public(self) -> dict[str, object]:
        shown = asdict(self)
        shown.pop("exits")
        shown.pop("restart_at")
        shown.pop("started_at")
        return shown


class Supervisor:
    def __init__(
        self, processes: Processes, status_path: Path, report: Callable[[str, bool], None] | None = None
    ) -> None:
        self._processes = processes
        self._status_path = status_path
        self._report = report or (lambda message, loud: log.warning(message))
        self._states: dict[str, ProcessState] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        for label in self._processes.labels():
            self._states[label] = ProcessState(pid=self._processes.pid(label))
        self._write()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops supervising (before the stack is stopped on purpose)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._status_path.unlink(missing_ok=True)

    def state(self, label: str) -> ProcessState:
        return self._states[label]

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            for label, state in self._states.items():
                try:
                    self._check(label, state)
                except Exception:
                    log.exception("supervising %s failed", label)

    def _check(self, label: str, state: ProcessState) -> None:
        now = time.monotonic()
        if state.restart_at is not None:
            if now >= state.restart_at:
                state.pid = self._processes.respawn(label)
                state.started_at = now
                state.restarts += 1
                state.restart_at = None
                if state.state != CRASH_LOOPING:
                    state.state = RUNNING
                self._report(f"{label} restarted (pid {state.pid}, restart {state.restarts})", False)
                self._write()
            return
        code = self._processes.exit_code(label)
        if code is None:
            if state.state == CRASH_LOOPING and state.exits and now - state.exits[-1] > CRASH_WINDOW_S:
                state.state = RUNNING  # up for a whole window again
                self._report(f"{label} is running steadily again", False)
                self._write()
            return
        state.last_exit, state.last_exit_at = code, time.time()
        if now - state.started_at < STABLE_RUN_S:
            state.exits.append(now)
        while state.exits and now - state.exits[0] > CRASH_WINDOW_S:
            state.exits.popleft()
        recent = len(state.exits)
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, recent - 1)) * random.uniform(0.8, 1.2)
        tail = _tail(self._processes.log_path(label))
        if recent >= CRASH_LOOP_EXITS:
            state.state = CRASH_LOOPING
            backoff = MAX_BACKOFF_S
            self._report(
                f"{label} keeps crashing ({recent} exits in {CRASH_WINDOW_S:.0f}s, last status {code}); "
                f"next try in {backoff:.0f}s. Its log ends:\n{tail}",
                True,
            )
        else:
            state.state = RESTARTING
            self._report(f"{label} exited with status {code}; restarting in {backoff:.1f}s:\n{tail}", False)
        state.restart_at = now + backoff
        self._write()

    def _write(self) -> None:
        with self._lock:
            status = {
                "supervisor_pid": os.getpid(),
                "updated_at": time.time(),
                "processes": {label: state.public() for label, state in self._states.items()},
            }
            work = self._status_path.with_suffix(".tmp")
            work.write_text(json.dumps(status, indent=2))
            work.replace(self._status_path)


def read_status(status_path: Path) -> dict[str, object] | None:
    """What a running `corral up` reports; None when none runs (no file, or its writer died)."""
    try:
        status = json.loads(status_path.read_text())
        os.kill(int(status["supervisor_pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return status


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
