"""One logging set-up for every service: plain lines on stderr, level from CORRAL_LOG_LEVEL."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    level_name = (level or os.environ.get("CORRAL_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level_name, format=_FORMAT, force=True)
    # uvicorn's access log duplicates what our spans record and floods at benchmark rates.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
