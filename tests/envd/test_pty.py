"""A real pseudo-terminal through the e2b SDK."""

import contextlib
import threading
import time

import pytest
from e2b import CommandExitException, PtySize

pytestmark = pytest.mark.sandbox


def _wait_for(buffer: bytearray, text: bytes, timeout_s: float = 15) -> None:
    deadline = time.time() + timeout_s
    while text not in buffer:
        if time.time() > deadline:
            raise AssertionError(f"{text!r} never appeared in {bytes(buffer)!r}")
        time.sleep(0.05)


def test_pty_input_resize_and_kill(sbx):
    output = bytearray()
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))

    def pump() -> None:
        with contextlib.suppress(CommandExitException):
            terminal.wait(on_pty=output.extend)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    sbx.pty.send_stdin(terminal.pid, b"tty; echo marker-$((40+2))\n")
    _wait_for(output, b"marker-42")
    assert b"/dev/pts/" in output

    sbx.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(terminal.pid, b"stty size\n")
    _wait_for(output, b"30 100")

    assert terminal.pid in {p.pid for p in sbx.commands.list()}
    assert sbx.pty.kill(terminal.pid) is True
    reader.join(10)
    assert not reader.is_alive()


def test_pty_ends_on_ctrl_d(sbx):
    output = bytearray()
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    results = []
    reader = threading.Thread(target=lambda: results.append(terminal.wait(on_pty=output.extend)))
    reader.start()
    # Input sent before the shell's line editor starts is flushed by it: wait for the shell.
    sbx.pty.send_stdin(terminal.pid, b"echo ready-$((1+1))\n")
    _wait_for(output, b"ready-2")
    sbx.pty.send_stdin(terminal.pid, b"\x04")
    reader.join(15)
    assert results and results[0].exit_code == 0
