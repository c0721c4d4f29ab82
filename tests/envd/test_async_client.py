"""The async e2b client against envd: commands, background handles, PTY and files."""

import asyncio

import pytest
from e2b import CommandExitException, PtySize, TimeoutException

pytestmark = pytest.mark.sandbox


async def test_run_and_callbacks(async_sbx):
    seen: list[str] = []
    result = await async_sbx.commands.run("echo one; echo two >&2", on_stdout=seen.append)
    assert (result.stdout, result.stderr) == ("one\n", "two\n")
    assert seen == ["one\n"]


async def test_exit_code(async_sbx):
    with pytest.raises(CommandExitException) as info:
        await async_sbx.commands.run("exit 7")
    assert info.value.exit_code == 7


async def test_background_connect_and_kill(async_sbx):
    handle = await async_sbx.commands.run("sleep 60", background=True)
    assert handle.pid in {p.pid for p in await async_sbx.commands.list()}
    attached = await async_sbx.commands.connect(handle.pid)
    assert await async_sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        await attached.wait()


async def test_stdin(async_sbx):
    handle = await async_sbx.commands.run("tr a-z A-Z", background=True, stdin=True)
    await async_sbx.commands.send_stdin(handle.pid, "shout\n")
    await async_sbx.commands.close_stdin(handle.pid)
    assert (await handle.wait()).stdout == "SHOUT\n"


async def test_pty(async_sbx):
    output = bytearray()
    ready = asyncio.Event()

    def on_data(data: bytes) -> None:
        output.extend(data)
        if b"async-pty-3" in output:
            ready.set()

    terminal = await async_sbx.pty.create(PtySize(rows=24, cols=80), on_data=on_data)
    await async_sbx.pty.send_stdin(terminal.pid, b"echo async-pty-$((1+2))\n")
    await asyncio.wait_for(ready.wait(), 15)
    assert await async_sbx.pty.kill(terminal.pid) is True


async def test_files(async_sbx):
    await async_sbx.files.write("/tmp/async/a.txt", "async text")
    assert await async_sbx.files.read("/tmp/async/a.txt") == "async text"
    assert [e.name for e in await async_sbx.files.list("/tmp/async")] == ["a.txt"]
    assert await async_sbx.files.exists("/tmp/async/a.txt")
    await async_sbx.files.remove("/tmp/async")
    assert not await async_sbx.files.exists("/tmp/async")


async def test_timeout_raises_as_in_the_sync_client(async_sbx):
    """The command is killed at its deadline and the stream says so (deadline_exceeded)."""
    with pytest.raises(TimeoutException):
        await async_sbx.commands.run("sleep 30; echo never", timeout=2)
