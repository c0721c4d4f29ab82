"""Denials the kernel made (nftables drops of UDP, ICMP and unproxied TCP, `table.py`), read
from the lines its log rules write to /dev/kmsg.

The log rules only fire for a flow's first packets (rate-limited per rule), so each line is
one attempt; retransmissions of the same attempt within a few seconds are folded into one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

from corral_libs.contracts.records import EgressDenial

from .table import DENY_LOG_PREFIX

log = logging.getLogger(__name__)

KMSG = "/dev/kmsg"
REPEAT_WINDOW_S = 5.0


def parse_line(line: str) -> tuple[str, EgressDenial] | None:
    """(host interface, denial) of one kmsg record of ours; None for anything else."""
    _, sep, message = line.partition(";")
    marker = message.find(DENY_LOG_PREFIX + " ")
    if not sep or marker < 0:
        return None
    words = message[marker + len(DENY_LOG_PREFIX) + 1 :].split()
    if not words:
        return None
    rule = words[0]
    fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
    iface, destination = fields.get("IN"), fields.get("DST")
    if not iface or not destination:
        return None
    port = fields.get("DPT", "0")
    denial = EgressDenial(
        at=time.time(),
        protocol=fields.get("PROTO", "ip").lower(),
        destination=destination,
        port=int(port) if port.isdigit() else 0,
        rule=rule,
    )
    return iface, denial


class KernelDenials:
    def __init__(self, on_denial: Callable[[str, EgressDenial], None], path: str = KMSG) -> None:
        self._on_denial = on_denial
        self._path = path
        self._fd: int | None = None
        self._recent: dict[tuple[str, str, str, int], float] = {}

    def start(self) -> None:
        try:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("cannot read %s (%s): kernel egress denials are not recorded", self._path, exc)
            return
        os.lseek(self._fd, 0, os.SEEK_END)  # only what happens from now on
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def stop(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _readable(self) -> None:
        assert self._fd is not None
        while True:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                return
            except BrokenPipeError:  # records were overwritten before we read them
                continue
            if not record:
                return
            with contextlib.suppress(ValueError):
                self._handle(record.decode(errors="replace"))

    def _handle(self, line: str) -> None:
        parsed = parse_line(line)
        if parsed is None:
            return
        iface, denial = parsed
        key = (iface, denial.protocol, denial.destination, denial.port)
        now = time.monotonic()
        if now - self._recent.get(key, 0.0) < REPEAT_WINDOW_S:
            return
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[key] = now
        self._on_denial(iface, denial)
