"""The Java kernel: ipykernel's protocol side (so it talks over ipc like the Python and bash
kernels, and is interrupted the same way) in front of JShell in a JVM of its own
(`java/CorralJShell.java`, compiled into the template by its build).

The JVM runs in its own session: an interrupt is a signal to the kernel's process group, and
it would end a JVM. The interrupt becomes a `STOP` to JShell instead, which keeps its state.
The JVM ends when this process does (its command pipe closes).
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ipykernel.kernelbase import Kernel

# Where the template's build puts the compiled evaluator; elsewhere (tests on a host) the JVM
# compiles the source as it starts, a second slower.
CLASS_DIR = Path(os.environ.get("CORRAL_JAVA_CLASSES", "/opt/corral/java"))
MAIN_CLASS = "CorralJShell"
SOURCE = Path(__file__).parent / "java" / f"{MAIN_CLASS}.java"
# The env vars a run sets and restores (languages.py) arrive as one line of this form.
ENV_DIRECTIVE = "%corral-env "
# ProcessEnvironment and Collections' map are opened so env vars can be set (see the .java).
JVM_OPTIONS = (
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
)


def _field(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(field: str) -> str:
    return base64.b64decode(field).decode(errors="replace")


def _program() -> list[str]:
    if (CLASS_DIR / f"{MAIN_CLASS}.class").is_file():
        return ["-cp", str(CLASS_DIR), MAIN_CLASS]
    return [str(SOURCE)]


class JShellProcess:
    """The JVM, its command pipe, and the three pipes it writes (stdout, stderr, answers)."""

    def __init__(self) -> None:
        java = shutil.which("java") or "java"
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [java, *JVM_OPTIONS, *_program(), str(write_end)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(write_end,),
            start_new_session=True,
        )
        os.close(write_end)
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self.answers = read_end
        self.outputs = {self.process.stdout.fileno(): "stdout", self.process.stderr.fileno(): "stderr"}
        for fd in (*self.outputs, self.answers):
            os.set_blocking(fd, False)
        self.selector = selectors.DefaultSelector()
        for fd in (*self.outputs, self.answers):
            self.selector.register(fd, selectors.EVENT_READ)
        self._pending = b""

    def send(self, *words: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((" ".join(words) + "\n").encode())
        self.process.stdin.flush()

    def drain(self, fd: int) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def answer_line(self) -> str | None:
        """A whole answer line if one has arrived (answers are read only after every output
        the JVM flushed before it, so output and answers stay in order)."""
        for fd, name in self.outputs.items():
            self.output(name, self.drain(fd))
        self._pending += self.drain(self.answers)
        if b"\n" not in self._pending:
            if self.process.poll() is not None:
                raise RuntimeError(f"the JVM exited with status {self.process.returncode}")
            return None
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def output(self, name: str, data: bytes) -> None:
        """Overridden by the kernel: where the program's own output goes."""

    def wait_answer(self, on_interrupt: Any = None) -> list[str]:
        while True:
            try:
                self.selector.select(timeout=1.0)
                line = self.answer_line()
            except KeyboardInterrupt:
                if on_interrupt is not None:
                    on_interrupt()
                continue
            if line is not None:
                return line.split(" ")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class JavaKernel(Kernel):
    implementation = "corral-java"
    implementation_version = "1.0"
    language = "java"
    language_info = {
        "name": "java",
        "mimetype": "text/x-java-source",
        "file_extension": ".java",
        "codemirror_mode": "java",
    }
    banner = "Java (JShell), by Corral"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jvm = self._start()

    def _start(self) -> JShellProcess:
        jvm = JShellProcess()
        jvm.output = self._stream  # type: ignore[method-assign]
        answer = jvm.wait_answer()
        if answer[0] != "READY":
            raise RuntimeError(f"JShell did not start: {answer}")
        return jvm

    def _stream(self, name: str, data: bytes) -> None:
        if data:
            self.send_response(
                self.iopub_socket, "stream", {"name": name, "text": data.decode(errors="replace")}
            )

    def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: Any = None,
        cell_id: Any = None,
    ) -> dict[str, Any]:
        if self._jvm.process.poll() is not None:
            self._jvm = self._start()
        if code.startswith(ENV_DIRECTIVE):
            return self._set_env(json.loads(code[len(ENV_DIRECTIVE) :]))
        interrupted = False

        def stop() -> None:
            nonlocal interrupted
            interrupted = True
            self._jvm.send("STOP")

        self._jvm.send("EVAL", _field(code))
        answer = self._jvm.wait_answer(on_interrupt=stop)
        if interrupted:
            # JShell ends a stopped snippet without saying so.
            answer = ["ERR", _field("Interrupted"), _field("the execution was interrupted"), _field("")]
        if answer[0] == "OK":
            value = _text(answer[1])
            if value and not silent:
                content = {
                    "execution_count": self.execution_count,
                    "data": {"text/plain": value},
                    "metadata": {},
                }
                self.send_response(self.iopub_socket, "execute_result", content)
            return self._ok()
        name, message, traceback = (_text(field) for field in answer[1:4])
        error = {
            "ename": name,
            "evalue": message,
            "traceback": traceback.splitlines() or [f"{name}: {message}"],
        }
        if not silent:
            self.send_response(self.iopub_socket, "error", error)
        return {"status": "error", "execution_count": self.execution_count, **error}

    def _set_env(self, change: dict[str, Any]) -> dict[str, Any]:
        for name, value in change.get("set", {}).items():
            self._jvm.send("SETENV", _field(name), _field(value))
            self._jvm.wait_answer()
        for name in change.get("unset", []):
            self._jvm.send("UNSETENV", _field(name))
            self._jvm.wait_answer()
        return self._ok()

    def _ok(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": [],
            "user_expressions": {},
        }

    def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        self._jvm.close()
        return {"status": "ok", "restart": restart}
