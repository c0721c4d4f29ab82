"""Files through the real e2b SDK (sync client): /files and filesystem.Filesystem."""

import gzip
import io
import os

import httpx
import pytest
from e2b import (
    FileNotFoundException,
    FileType,
    InvalidArgumentException,
    NotEnoughSpaceException,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import WriteEntry

from tests.harness.envd import SMALL_FS, SMALL_FS_BYTES, USER_UID

pytestmark = pytest.mark.sandbox


def test_write_and_read_text(sbx):
    info = sbx.files.write("/tmp/files/hello.txt", "hello\nworld")
    assert (info.path, info.name) == ("/tmp/files/hello.txt", "hello.txt")
    assert sbx.files.read("/tmp/files/hello.txt") == "hello\nworld"


def test_relative_paths_land_in_home_owned_by_user(envd, sbx):
    info = sbx.files.write("notes/today.txt", "x")
    assert info.path == "/home/user/notes/today.txt"
    host = envd.host_path("/home/user/notes/today.txt")
    assert host.read_text() == "x"
    assert host.stat().st_uid == 1000 and host.parent.stat().st_uid == 1000
    assert sbx.files.get_info("notes/today.txt").owner == "user"


def test_bytes_and_streams(sbx):
    payload = os.urandom(300_000)
    sbx.files.write("/tmp/files/blob.bin", payload)
    assert sbx.files.read("/tmp/files/blob.bin", format="bytes") == payload
    streamed = b"".join(sbx.files.read("/tmp/files/blob.bin", format="stream"))
    assert streamed == payload
    # A file-like object goes up as application/octet-stream.
    sbx.files.write("/tmp/files/from-io.bin", io.BytesIO(payload))
    assert sbx.files.read("/tmp/files/from-io.bin", format="bytes") == payload


def test_gzip_upload_and_download(sbx):
    text = "compressible " * 10_000
    sbx.files.write("/tmp/files/gz.txt", text, gzip=True)
    assert sbx.files.read("/tmp/files/gz.txt", gzip=True) == text
    assert sbx.files.read("/tmp/files/gz.txt") == text


def test_procfs_files_are_read_to_eof(sbx):
    # procfs reports size 0: the body must come from reading, not from stat.
    boot_id = sbx.files.read("/proc/sys/kernel/random/boot_id")
    assert len(boot_id.strip()) == 36


def test_write_files_in_one_request(sbx):
    infos = sbx.files.write_files(
        [
            WriteEntry(path="/tmp/multi/a.txt", data="A"),
            WriteEntry(path="/tmp/multi/sub/b.txt", data=b"B"),
        ]
    )
    assert sorted(i.path for i in infos) == ["/tmp/multi/a.txt", "/tmp/multi/sub/b.txt"]
    assert sbx.files.read("/tmp/multi/sub/b.txt") == "B"


def test_overwrite_truncates(sbx):
    sbx.files.write("/tmp/files/over.txt", "a much longer first version")
    sbx.files.write("/tmp/files/over.txt", "short")
    assert sbx.files.read("/tmp/files/over.txt") == "short"


def test_list_with_depth_exists_and_info(sbx):
    sbx.files.write("/tmp/tree/a.txt", "a")
    sbx.files.write("/tmp/tree/d1/b.txt", "bb")
    sbx.files.write("/tmp/tree/d1/d2/c.txt", "ccc")
    top = {e.path: e for e in sbx.files.list("/tmp/tree")}
    assert set(top) == {"/tmp/tree/a.txt", "/tmp/tree/d1"}
    assert top["/tmp/tree/d1"].type == FileType.DIR
    assert top["/tmp/tree/a.txt"].type == FileType.FILE and top["/tmp/tree/a.txt"].size == 1
    deep = {e.path for e in sbx.files.list("/tmp/tree", depth=3)}
    assert deep == {
        "/tmp/tree/a.txt",
        "/tmp/tree/d1",
        "/tmp/tree/d1/b.txt",
        "/tmp/tree/d1/d2",
        "/tmp/tree/d1/d2/c.txt",
    }
    assert sbx.files.exists("/tmp/tree/d1/d2/c.txt") is True
    assert sbx.files.exists("/tmp/tree/missing") is False
    info = sbx.files.get_info("/tmp/tree/d1/b.txt")
    assert (info.name, info.size, info.permissions, info.mode) == ("b.txt", 2, "-rw-r--r--", 0o644)


def test_symlinks_report_their_target(sbx):
    sbx.files.write("/tmp/links/target.txt", "t")
    sbx.commands.run("ln -s /tmp/links/target.txt /tmp/links/link")
    info = sbx.files.get_info("/tmp/links/link")
    assert info.type == FileType.SYMLINK
    assert info.symlink_target == "/tmp/links/target.txt"


def test_make_dir_remove_rename(sbx):
    assert sbx.files.make_dir("/tmp/ops/new/deeper") is True
    assert sbx.files.make_dir("/tmp/ops/new/deeper") is False
    sbx.files.write("/tmp/ops/new/deeper/f.txt", "f")
    moved = sbx.files.rename("/tmp/ops/new/deeper/f.txt", "/tmp/ops/elsewhere/g.txt")
    assert moved.path == "/tmp/ops/elsewhere/g.txt"
    assert sbx.files.read("/tmp/ops/elsewhere/g.txt") == "f"
    assert sbx.files.exists("/tmp/ops/new/deeper/f.txt") is False
    sbx.files.remove("/tmp/ops/new")
    assert sbx.files.exists("/tmp/ops/new") is False
    sbx.files.remove("/tmp/ops/never-existed")  # no error


def test_file_metadata_round_trip(sbx):
    info = sbx.files.write("/tmp/files/meta.txt", "m", metadata={"owner": "agent-7"})
    assert info.metadata == {"owner": "agent-7"}
    assert sbx.files.get_info("/tmp/files/meta.txt").metadata == {"owner": "agent-7"}


def test_an_overwrite_leaves_no_stale_metadata(sbx):
    sbx.files.write("/tmp/files/stale.txt", "v1", metadata={"owner": "agent-7", "step": "1"})
    sbx.files.write("/tmp/files/stale.txt", "v2", metadata={"step": "2"})
    assert sbx.files.get_info("/tmp/files/stale.txt").metadata == {"step": "2"}
    sbx.files.write("/tmp/files/stale.txt", "v3")
    assert not sbx.files.get_info("/tmp/files/stale.txt").metadata


def test_missing_file_is_not_found(sbx):
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/tmp/definitely/not/here")
    with pytest.raises(FileNotFoundException):
        sbx.files.list("/tmp/definitely/not/here")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info("/tmp/definitely/not/here")


def test_directory_given_as_file_is_invalid(sbx):
    sbx.files.make_dir("/tmp/a-dir")
    with pytest.raises(InvalidArgumentException):
        sbx.files.read("/tmp/a-dir")
    with pytest.raises(InvalidArgumentException):
        sbx.files.write("/tmp/a-dir", "x")
    sbx.files.write("/tmp/a-file", "x")
    with pytest.raises(InvalidArgumentException):
        sbx.files.list("/tmp/a-file")
    with pytest.raises(InvalidArgumentException):
        sbx.files.make_dir("/tmp/a-file")


def test_reads_are_the_users(sbx):
    sbx.files.write("/root/secret.txt", "top secret", user="root")
    assert sbx.files.read("/root/secret.txt", user="root") == "top secret"
    with pytest.raises(SandboxException, match="permission denied"):
        sbx.files.read("/root/secret.txt")
    with pytest.raises(SandboxException, match="permission denied"):
        sbx.files.list("/root")
    assert sbx.commands.run("cat /root/secret.txt", user="root").stdout == "top secret"


def _owner(envd, path: str) -> int:
    return os.stat(envd.host_path(path)).st_uid


def test_writes_go_anywhere_and_belong_to_the_user(sbx, envd):
    """As E2B's envd (root) does: missing parents are made for the user, only those."""
    sbx.files.write("/root/theirs/deep/file.txt", "for user")
    assert [_owner(envd, p) for p in ("/root", "/root/theirs", "/root/theirs/deep")] == [
        0,
        USER_UID,
        USER_UID,
    ]
    assert _owner(envd, "/root/theirs/deep/file.txt") == USER_UID
    assert os.stat(envd.host_path("/root/theirs")).st_mode & 0o777 == 0o755
    sbx.files.make_dir("/root/made/inner")
    assert [_owner(envd, p) for p in ("/root", "/root/made", "/root/made/inner")] == [0, USER_UID, USER_UID]
    sbx.files.rename("/root/theirs/deep/file.txt", "/root/moved/here/file.txt")
    assert _owner(envd, "/root/moved/here") == USER_UID
    assert sbx.files.read("/root/moved/here/file.txt", user="root") == "for user"
    sbx.files.write("/root/as-root/file.txt", "r", user="root")
    assert _owner(envd, "/root/as-root") == 0 and _owner(envd, "/root/as-root/file.txt") == 0
    sbx.files.write("~/relative/in/home.txt", "h")
    assert (envd.host_path("/home/user/relative/in/home.txt")).read_text() == "h"


def test_a_path_through_a_file_is_bad_input(sbx):
    sbx.files.write("/tmp/plain-file", "x")
    with pytest.raises(InvalidArgumentException):
        sbx.files.write("/tmp/plain-file/below.txt", "y")
    with pytest.raises(InvalidArgumentException):
        sbx.files.make_dir("/tmp/plain-file/dir")


def test_a_write_that_cannot_fit_leaves_nothing(sbx, envd):
    target = f"{SMALL_FS}/big.bin"
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write(target, b"x" * (2 * SMALL_FS_BYTES))
    assert not sbx.files.exists(target)
    # A compressed body gives no size up front: the write runs out midway, and is removed.
    body = gzip.compress(b"\0" * (2 * SMALL_FS_BYTES))
    answer = httpx.post(
        f"{envd.url}/files",
        params={"path": target, "username": "user"},
        content=body,
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 507 and "not enough disk space" in answer.json()["message"]
    assert not sbx.files.exists(target)
    sbx.files.write(f"{SMALL_FS}/fits.txt", "small")  # the space is there again
