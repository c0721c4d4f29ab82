"""Network slots: a returned slot is given out again as late as possible."""

from __future__ import annotations

import pytest

from corral_services.nodeagent.slots import NoFreeSlot, Slots


def test_a_released_slot_waits_behind_every_other_free_one():
    slots = Slots(100, 3)
    first = slots.take()
    assert first == 100
    slots.release(first)
    assert [slots.take(), slots.take(), slots.take()] == [101, 102, 100]
    with pytest.raises(NoFreeSlot):
        slots.take()


def test_adopted_slots_are_not_given_out():
    slots = Slots(0, 3)
    slots.mark_used(1)
    assert [slots.take(), slots.take()] == [0, 2]
    slots.release(1)
    assert slots.take() == 1


def test_slots_must_fit_the_network():
    with pytest.raises(ValueError, match="do not fit"):
        Slots(-1, 3)
