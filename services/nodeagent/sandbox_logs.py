"""A sandbox's console output as log records: envd and the interpreter write
`<date> <time>,<ms> <LEVEL> <logger>: <message>` (libs/logging.py); lines that do not start a
record (a traceback, runsc's own output) belong to the record before them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from corral_libs.contracts.messages import LogEntry

_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ([A-Z]+) (\S+): (.*)$")
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error"}


def parse_console(lines: list[str]) -> list[LogEntry]:
    entries: list[LogEntry] = []
    for line in lines:
        match = _RECORD.match(line)
        if match is not None:
            stamp, millis, level, logger, message = match.groups()
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            entries.append(
                LogEntry(
                    timestamp=when + int(millis) / 1000,
                    level=_LEVELS.get(level, "info"),
                    logger=logger,
                    message=message,
                )
            )
        elif entries:
            last = entries[-1]
            entries[-1] = LogEntry(
                timestamp=last.timestamp,
                level=last.level,
                logger=last.logger,
                message=f"{last.message}\n{line}",
            )
        elif line.strip():
            entries.append(LogEntry(timestamp=0.0, level="info", logger="console", message=line))
    return entries
