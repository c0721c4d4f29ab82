"""The supervisor's restart policy on real processes: quick exits back off and end in a
reported crash loop; a process that ran normally before it died is restarted at once, however
often that happens."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral_libs import supervisor
from corral_libs.supervisor import CRASH_LOOPING, Supervisor


class Commands:
    def __init__(self, tmp_path: Path, argv: list[str]) -> None:
        self._argv = argv
        self._log = tmp_path / "p.log"
        self._log.write_text("")
        self.process = subprocess.Popen(argv)

    def exit_code(self, label: str) -> int | None:
        return self.process.poll()

    def pid(self, label: str) -> int:
        return self.process.pid

    def respawn(self, label: str) -> int:
        self.process = subprocess.Popen(self._argv)
        return self.process.pid

    def labels(self) -> list[str]:
        return ["p"]

    def log_path(self, label: str) -> Path:
        return self._log


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF_S", 0.02)
    monkeypatch.setattr(supervisor, "MAX_BACKOFF_S", 30.0)
    monkeypatch.setattr(supervisor, "STABLE_RUN_S", 0.5)


def test_quick_exits_back_off_into_a_reported_crash_loop(tmp_path: Path, fast: None) -> None:
    reports: list[tuple[str, bool]] = []
    commands = Commands(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"])
    watcher = Supervisor(commands, tmp_path / "status.json", report=lambda m, loud: reports.append((m, loud)))
    watcher.start()
    try:
        deadline = time.monotonic() + 20
        while watcher.state("p").state != CRASH_LOOPING:
            assert time.monotonic() < deadline, reports
            time.sleep(0.05)
        assert any(loud and "keeps crashing" in message for message, loud in reports)
        assert watcher.state("p").last_exit == 3
    finally:
        watcher.stop()
        commands.process.kill()


def test_a_process_that_ran_normally_comes_back_at_once(tmp_path: Path, fast: None) -> None:
    commands = Commands(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = Supervisor(commands, tmp_path / "status.json", report=lambda m, loud: None)
    watcher.start()
    try:
        for kill in range(1, 7):
            time.sleep(0.6)  # ran longer than STABLE_RUN_S
            commands.process.kill()
            killed = time.monotonic()
            while watcher.state("p").restarts < kill:
                assert time.monotonic() - killed < 5, f"restart {kill} not within 5s"
                time.sleep(0.01)
        assert watcher.state("p").state != CRASH_LOOPING
    finally:
        watcher.stop()
        commands.process.kill()
