"""Starts a kernel (`python -m corral_services.interpreter.kernel_launcher python|bash|java -f <file>`).
Python kernels load E2B's result formats (`display.py`). One change to ipykernel: the pipe
that carries forked subprocesses' output listens on a Unix socket instead of TCP on
127.0.0.1. gVisor cannot checkpoint a listening TCP socket that anything waits on, and
templates are snapshotted with their kernel running."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import zmq
from ipykernel import iostream
from ipykernel.kernelapp import IPKernelApp
from zmq.eventloop.zmqstream import ZMQStream


def _setup_pipe_in(self: Any) -> None:
    self._pipe_uuid = os.urandom(16)
    pipe_in = self.socket.context.socket(zmq.PULL)
    pipe_in.linger = 0
    self._pipe_address = (
        f"ipc://{tempfile.gettempdir()}/corral-kernel-pipe-{os.getpid()}-{os.urandom(4).hex()}"
    )
    pipe_in.bind(self._pipe_address)
    self._pipe_in = ZMQStream(pipe_in, self.io_loop)
    self._pipe_in.on_recv(self._handle_pipe_msg)


def _setup_pipe_out(self: Any) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    context: zmq.Context[Any] = zmq.Context()  # a new one after the fork
    pipe_out = context.socket(zmq.PUSH)
    pipe_out.linger = 3000
    pipe_out.connect(self._pipe_address)
    return context, pipe_out


def main() -> None:
    iostream.IOPubThread._setup_pipe_in = _setup_pipe_in  # type: ignore[method-assign]
    iostream.IOPubThread._setup_pipe_out = _setup_pipe_out  # type: ignore[method-assign]
    language = sys.argv.pop(1)
    # Started with -P, so that nothing in the user's working directory stood in for what this
    # module imported; the user's own code finds its modules there, as in any Jupyter kernel.
    sys.path.insert(0, "")
    if language == "bash":
        from bash_kernel.kernel import BashKernel

        IPKernelApp.launch_instance(kernel_class=BashKernel)
    elif language == "java":
        from .java_kernel import JavaKernel

        IPKernelApp.launch_instance(kernel_class=JavaKernel)
    else:
        IPKernelApp.launch_instance(extensions=["corral_services.interpreter.display"])


if __name__ == "__main__":
    main()
