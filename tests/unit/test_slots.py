"""SlotAllocator: last-in first-out reuse, growth by doubling, restores into a chosen slot."""

from __future__ import annotations

from trajstream.stream.slots import SlotAllocator


def _allocator(capacity: int) -> tuple[SlotAllocator, list[int]]:
    grown: list[int] = []
    return SlotAllocator(capacity, grown.append), grown


def test_slots_are_handed_out_in_order_and_the_owner_grows_by_doubling():
    slots, grown = _allocator(2)
    assert [slots.take(v) for v in "abcde"] == [0, 1, 2, 3, 4]
    assert grown == [2, 4, 8] and slots.capacity == 8 and slots.high == 5
    assert slots.ids == ["a", "b", "c", "d", "e", None, None, None]
    assert slots.slot_of == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4} and len(slots) == 5


def test_released_slots_are_reused_last_in_first_out():
    slots, _ = _allocator(8)
    for v in "abcd":
        slots.take(v)
    assert slots.release(1) == "b" and slots.release(3) == "d"
    assert "b" not in slots.slot_of and slots.ids[1] is None and len(slots) == 2
    assert [slots.take(v) for v in "xyz"] == [3, 1, 4]


def test_a_preferred_slot_is_taken_when_free_and_the_skipped_ones_become_free():
    slots, grown = _allocator(2)
    assert slots.take("a", prefer=5) == 5
    assert grown == [2, 4, 8] and slots.high == 6
    assert slots.take("b", prefer=2) == 2  # skipped over: free
    assert slots.take("c", prefer=5) == 0  # held: the next free one (lowest skipped first)
    assert slots.take("d") == 1
    assert slots.take("e", prefer=-1) == 3
