"""Files where E2B's envd puts them, through a real sandbox's writable root: new top-level
directories, parents made for the requesting user (only the ones made), root's writes left
root's. Python SDK (sync and async) and the npm SDK."""

from __future__ import annotations

import shutil

import pytest
from e2b import AsyncSandbox, InvalidArgumentException, Sandbox
from e2b.sandbox.filesystem.filesystem import WriteEntry

from .test_other_clients import NODE_DIR, _run


def owners(sbx: Sandbox, *paths: str) -> list[str]:
    return sbx.commands.run(f"stat -c %U {' '.join(paths)}").stdout.split()


def test_writes_and_directories_anywhere_sync(conn):
    sbx = Sandbox.create(**conn)
    try:
        written = sbx.files.write_files(
            [WriteEntry(path="/newdir/x.txt", data="x"), WriteEntry(path="/home/user/b.txt", data="b")]
        )
        assert [w.path for w in written] == ["/newdir/x.txt", "/home/user/b.txt"]
        assert owners(sbx, "/newdir", "/newdir/x.txt", "/home/user/b.txt") == ["user"] * 3
        sbx.files.write("/opt/y.txt", "y")
        assert owners(sbx, "/opt", "/opt/y.txt") == ["root", "user"]  # /opt was there: untouched
        sbx.files.make_dir("/mkd/x/y")
        assert owners(sbx, "/", "/mkd", "/mkd/x", "/mkd/x/y") == ["root", "user", "user", "user"]
        sbx.files.rename("/newdir/x.txt", "/moved/into/x.txt")
        assert sbx.files.read("/moved/into/x.txt") == "x"
        assert owners(sbx, "/moved", "/moved/into") == ["user", "user"]
        sbx.files.write("/rootdir/r.txt", "r", user="root")
        assert owners(sbx, "/rootdir", "/rootdir/r.txt") == ["root", "root"]
        with pytest.raises(InvalidArgumentException):
            sbx.files.write("/opt/y.txt/below.txt", "no")
    finally:
        sbx.kill()


async def test_writes_and_directories_anywhere_async(conn):
    sbx = await AsyncSandbox.create(**conn)
    try:
        await sbx.files.write("/async-top/deep/a.txt", "a")
        await sbx.files.make_dir("/async-made/inner")
        found = (
            await sbx.commands.run("stat -c %U /async-top /async-top/deep/a.txt /async-made/inner")
        ).stdout
        assert found.split() == ["user"] * 3
        with pytest.raises(InvalidArgumentException):
            await sbx.files.make_dir("/async-top/deep/a.txt/dir")
    finally:
        await sbx.kill()


def test_npm_multi_file_write_anywhere(stack):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "e2b").exists():
        pytest.skip("run scripts/install.sh: it installs node and the npm e2b SDK")
    seen = _run(["node", "files_anywhere.mjs"], stack, NODE_DIR)
    assert seen["paths"] == ["/0/multi_test_file0.txt", "/home/user/multi_test_file1.txt"]
    assert seen["owners"] == ["user", "user", "user"]
    assert seen["read"] == "zero"
    assert seen["throughFile"] == "InvalidArgumentError"
