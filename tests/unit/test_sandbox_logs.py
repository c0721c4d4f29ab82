"""envd's console lines as log records."""

from __future__ import annotations

from datetime import UTC, datetime

from corral_services.nodeagent.sandbox_logs import parse_console


def test_records_levels_and_continuation_lines():
    entries = parse_console(
        [
            "runsc: starting",
            "2026-12-02 06:49:07,188 INFO corral_services.envd.server: listening on 0.0.0.0:49983",
            "2026-12-02 06:49:08,001 WARNING corral_services.envd.process: slow reader",
            "2026-12-02 06:49:09,500 ERROR asyncio: Task exception was never retrieved",
            "Traceback (most recent call last):",
            "ValueError: boom",
        ]
    )
    assert [(e.level, e.logger) for e in entries] == [
        ("info", "console"),
        ("info", "corral_services.envd.server"),
        ("warn", "corral_services.envd.process"),
        ("error", "asyncio"),
    ]
    assert entries[1].timestamp == datetime(2026, 12, 2, 6, 49, 7, 188000, tzinfo=UTC).timestamp()
    assert entries[3].message.endswith("\nTraceback (most recent call last):\nValueError: boom")
