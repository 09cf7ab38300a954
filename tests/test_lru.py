import pytest

from seqpatch_core.base.lru import LRU


@pytest.mark.parametrize("maxsize", [2, 3, 5])
def test_the_least_recently_used_entry_goes_first(maxsize):
    cache = LRU(maxsize)
    for i in range(maxsize):
        cache.put(i, str(i))
    assert cache.get(0) == "0"  # 0 is now the most recent, 1 the least
    cache.put("new", "n")
    assert len(cache) == maxsize
    assert "new" in cache and 0 in cache and 1 not in cache
    assert cache.get(1, "missing") == "missing"


def test_put_replaces_and_clear_empties():
    cache = LRU(2)
    cache.put("a", 1)
    cache.put("a", 2)
    assert cache.get("a") == 2 and len(cache) == 1
    cache.clear()
    assert cache.get("a") is None and len(cache) == 0


def test_an_empty_cache_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        LRU(0)
