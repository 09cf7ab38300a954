"""A small thread-safe least-recently-used map: the one cache type of the project (working slices,
shared example volumes, per-session slices and readouts)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["LRU"]


class LRU:
    """At most ``maxsize`` entries; :meth:`get` marks an entry as used, :meth:`put` drops the least
    recently used ones past the size. Safe to share between threads (one lock per cache)."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"an LRU cache holds at least one entry, got maxsize={maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def values(self) -> list:
        """The cached values, least recently used first (a copy)."""
        with self._lock:
            return list(self._data.values())

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data
