"""Network slots (one per sandbox on this node): taken on create, returned on kill.

A returned slot goes to the back of the line. Its address is then not given to a new
sandbox for as long as possible: the proxy keeps idle connections to sandbox addresses for a
few seconds, and one left over from the slot's previous sandbox would reach the new one
(which resets it: a spurious 502)."""

from __future__ import annotations

from collections import OrderedDict

from .network import MAX_SLOTS


class NoFreeSlot(RuntimeError):
    pass


class Slots:
    def __init__(self, base: int, size: int) -> None:
        if base < 0 or base + size > MAX_SLOTS:
            raise ValueError(f"slots {base}..{base + size} do not fit the {MAX_SLOTS} the network has")
        self._range = range(base, base + size)
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(self._range)

    def take(self) -> int:
        """The free slot returned longest ago (never used ones first)."""
        if not self._free:
            raise NoFreeSlot("this node has no free sandbox slot")
        slot, _ = self._free.popitem(last=False)
        return slot

    def mark_used(self, slot: int) -> None:
        self._free.pop(slot, None)

    def release(self, slot: int) -> None:
        if slot in self._range:
            self._free[slot] = None
