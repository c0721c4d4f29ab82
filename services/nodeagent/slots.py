"""Network slots (one per sandbox on this node): taken on create, returned on kill."""

from __future__ import annotations

from .network import MAX_SLOTS


class NoFreeSlot(RuntimeError):
    pass


class Slots:
    def __init__(self, base: int, size: int) -> None:
        if base < 0 or base + size > MAX_SLOTS:
            raise ValueError(f"slots {base}..{base + size} do not fit the {MAX_SLOTS} the network has")
        self._range = range(base, base + size)
        self._used: set[int] = set()

    def take(self) -> int:
        for slot in self._range:
            if slot not in self._used:
                self._used.add(slot)
                return slot
        raise NoFreeSlot("this node has no free sandbox slot")

    def mark_used(self, slot: int) -> None:
        self._used.add(slot)

    def release(self, slot: int) -> None:
        self._used.discard(slot)
