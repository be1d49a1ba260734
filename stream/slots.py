"""Which row of slot-indexed arrays each vehicle id owns.

The processor's state store (stream/state.py) and the live map's fleet table
(stream/livemap/table.py) keep per-vehicle data in rows of preallocated numpy arrays; this
hands out those rows. Allocation is deterministic (the same calls give the same layout):
a freed slot is reused last-in first-out, else the next never-used one is taken, and the
owner's arrays double when that is past their end.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SlotAllocator", "SlotOwner"]


class SlotAllocator:
    """Vehicle id -> slot, a free list and the high-water mark.

    ``grow(capacity)`` is the owner's: it resizes its arrays to ``capacity`` rows, keeping
    the existing ones. It runs once from the constructor and again whenever a slot would
    not fit.
    """

    def __init__(self, capacity: int, grow: Callable[[int], None]) -> None:
        self.slot_of: dict[str, int] = {}
        self.ids: list[str | None] = []  # per slot: its vehicle, None while free
        self.high = 0  # slots [0, high) have been handed out at least once
        self.capacity = 0
        self._free: list[int] = []
        self._grow = grow
        self._resize(capacity)

    def __len__(self) -> int:
        """Vehicles currently holding a slot."""
        return len(self.slot_of)

    def take(self, vehicle_id: str, prefer: int = -1) -> int:
        """A slot for ``vehicle_id``, which holds none: the most recently freed slot, else
        the next never-used one. ``prefer`` (a restore putting a vehicle back where it was
        before a restart) is taken instead when free; the never-used slots it skips become
        free ones."""
        if prefer >= self.high:
            self._make_room(prefer)
            self._free.extend(reversed(range(self.high, prefer)))
            self.high = prefer + 1
            s = prefer
        elif prefer >= 0 and prefer in self._free:
            self._free.remove(prefer)
            s = prefer
        elif self._free:
            s = self._free.pop()
        else:
            self._make_room(self.high)
            s = self.high
            self.high += 1
        self.slot_of[vehicle_id] = s
        self.ids[s] = vehicle_id
        return s

    def release(self, slot: int) -> str:
        """Forget the vehicle in ``slot`` (which must hold one); the slot is the next one
        :meth:`take` hands out. Returns the vehicle's id."""
        vehicle_id = self.ids[slot]
        assert vehicle_id is not None, f"slot {slot} is free"
        del self.slot_of[vehicle_id]
        self.ids[slot] = None
        self._free.append(slot)
        return vehicle_id

    def _make_room(self, slot: int) -> None:
        while slot >= self.capacity:
            self._resize(2 * self.capacity)

    def _resize(self, capacity: int) -> None:
        self._grow(capacity)
        self.ids.extend([None] * (capacity - len(self.ids)))
        self.capacity = capacity


class SlotOwner:
    """What an owner of slot-indexed arrays shows of its :class:`SlotAllocator` (kept at
    ``_allocator``): callers read ``ids``, ``high`` and ``capacity`` on the owner."""

    _allocator: SlotAllocator

    def __len__(self) -> int:
        """Vehicles currently holding a slot."""
        return len(self._allocator)

    @property
    def ids(self) -> list[str | None]:
        """Per slot: its vehicle id, None while free."""
        return self._allocator.ids

    @property
    def high(self) -> int:
        """Slots [0, high) have been used at least once."""
        return self._allocator.high

    @property
    def capacity(self) -> int:
        return self._allocator.capacity
