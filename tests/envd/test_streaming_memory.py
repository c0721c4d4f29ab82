"""Big uploads and big outputs stream through envd: its peak memory stays far below them."""

import pytest

pytestmark = pytest.mark.sandbox

MB = 1 << 20


def test_large_upload_and_output_do_not_pile_up(envd, sbx):
    chunk = b"z" * MB

    def body():
        for _ in range(200):
            yield chunk

    info = sbx.files.write("/tmp/huge.bin", body())
    assert info.path == "/tmp/huge.bin"
    assert envd.host_path("/tmp/huge.bin").stat().st_size == 200 * MB

    printed = 0

    def count(text: str) -> None:
        nonlocal printed
        printed += len(text)

    sbx.commands.run("head -c 104857600 /dev/zero | tr '\\0' x", on_stdout=count, timeout=300)
    assert printed == 100 * MB
    sbx.files.remove("/tmp/huge.bin")
    assert envd.peak_rss_bytes() < 120 * MB
