"""Directory watches: the sync SDK's polling watcher and the async SDK's stream."""

import asyncio
import time

import pytest
from e2b import FilesystemEventType

pytestmark = pytest.mark.sandbox


def _poll(handle, predicate, timeout_s=10.0):
    events = []
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        events.extend(handle.get_new_events())
        if predicate(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"condition never met; events: {events}")


def test_sync_recursive_watch(sbx):
    sbx.files.make_dir("/tmp/watched/sub")
    handle = sbx.files.watch_dir("/tmp/watched", recursive=True)
    try:
        sbx.files.write("/tmp/watched/top.txt", "1")
        sbx.files.write("/tmp/watched/sub/inner.txt", "2")
        sbx.files.make_dir("/tmp/watched/sub/newdir")
        sbx.files.write("/tmp/watched/sub/newdir/deep.txt", "3")
        sbx.files.rename("/tmp/watched/top.txt", "/tmp/watched/renamed.txt")
        sbx.files.remove("/tmp/watched/renamed.txt")

        def seen(events):
            pairs = {(e.name, e.type) for e in events}
            return {
                ("top.txt", FilesystemEventType.CREATE),
                ("top.txt", FilesystemEventType.WRITE),
                ("sub/inner.txt", FilesystemEventType.CREATE),
                ("sub/newdir/deep.txt", FilesystemEventType.CREATE),
                ("top.txt", FilesystemEventType.RENAME),
                ("renamed.txt", FilesystemEventType.CREATE),
                ("renamed.txt", FilesystemEventType.REMOVE),
            } <= pairs

        _poll(handle, seen)
    finally:
        handle.stop()


def test_sync_non_recursive_watch_ignores_subdirs(sbx):
    sbx.files.make_dir("/tmp/flat/sub")
    handle = sbx.files.watch_dir("/tmp/flat")
    try:
        sbx.files.write("/tmp/flat/sub/hidden.txt", "x")
        sbx.files.write("/tmp/flat/visible.txt", "y")
        events = _poll(handle, lambda evs: any(e.name == "visible.txt" for e in evs))
        assert not any("hidden" in e.name for e in events)
    finally:
        handle.stop()


def test_watch_missing_dir_is_not_found(sbx):
    from e2b import NotFoundException

    with pytest.raises(NotFoundException):
        sbx.files.watch_dir("/tmp/no-such-dir")


async def test_async_watch_stream(async_sbx):
    await async_sbx.files.make_dir("/tmp/async-watched")
    received = []
    got_it = asyncio.Event()

    def on_event(event):
        received.append(event)
        if event.name == "x.txt" and event.type == FilesystemEventType.WRITE:
            got_it.set()

    handle = await async_sbx.files.watch_dir("/tmp/async-watched", on_event, recursive=True)
    try:
        await async_sbx.files.write("/tmp/async-watched/x.txt", "payload")
        await asyncio.wait_for(got_it.wait(), 10)
    finally:
        await handle.stop()
    assert any(e.type == FilesystemEventType.CREATE and e.name == "x.txt" for e in received)
