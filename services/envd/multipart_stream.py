"""A streaming multipart/form-data reader: parts come out as they arrive, so an upload of
any size passes through in chunks instead of being spooled or held in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header


@dataclass(frozen=True, slots=True)
class PartStart:
    field: str | None
    filename: str | None


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Item = PartStart | bytes | PartEnd


class MultipartError(ValueError):
    pass


async def iter_multipart(body: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[Item]:
    pending: list[Item] = []
    headers: dict[bytes, bytes] = {}
    field_name = bytearray()
    field_value = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(field_name).lower()] = bytes(field_value)
        field_name.clear()
        field_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        filename = options.get(b"filename")
        pending.append(
            PartStart(
                name.decode() if name is not None else None,
                filename.decode() if filename is not None else None,
            )
        )
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        pending.append(bytes(data[start:end]))

    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": lambda: pending.append(PartEnd()),
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
            for item in pending:
                yield item
            pending.clear()
        parser.finalize()
    except ValueError as exc:  # python-multipart's parse errors derive from ValueError
        raise MultipartError(f"malformed multipart body: {exc}") from None
    for item in pending:
        yield item


def multipart_boundary(content_type: str) -> bytes | None:
    mime, options = parse_options_header(content_type)
    if mime != b"multipart/form-data":
        return None
    return options.get(b"boundary")
