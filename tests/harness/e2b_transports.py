"""Drops the e2b SDK's pooled HTTP transports while Python is still whole.

e2b 2.63 keeps its pyqwest (Rust) transports in module-level pools for the life of the
process. When they are only freed during interpreter teardown, the process sometimes dies
with SIGABRT after all its work is done (seen with e2b 2.63 / pyqwest 0.12 about one run in
three with the async client). Freeing them earlier avoids that.
"""

from __future__ import annotations

import gc
import importlib

_POOLS = ("_transports", "_pools", "_httpx_transports")


def drop_e2b_transports() -> None:
    for module_name in ("e2b.api.client_async", "e2b.api.client_sync"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in _POOLS:
            pool = getattr(module, name, None)
            if isinstance(pool, dict):
                pool.clear()
    gc.collect()
