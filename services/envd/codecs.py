"""Connect codecs that answer a malformed request body with `invalid_argument` (as
connect-go's envd does) instead of an internal error."""

from __future__ import annotations

from typing import Any

from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError


class _RejectingMalformed:
    def __init__(self, inner: Codec) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self._inner.decode(data, message_class)
        except Exception as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"unmarshal message: {exc}") from None


def envd_codecs() -> list[Codec]:
    return [_RejectingMalformed(proto_binary_codec()), _RejectingMalformed(proto_json_codec())]
