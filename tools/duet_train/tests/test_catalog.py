"""The SplitMix64 catalog against DESIGN.md §2's check value and ids computed
independently (a C program with uint64_t arithmetic, seed 12345)."""
import numpy as np

from duet_train import catalog
from duet_train.catalog import Catalog, mix, mix_array
from conftest import tiny_config


def test_mix_check_values():
    assert mix(0) == 0xE220A8397B1DCDAF
    # SplitMix64 stream seeded with 0: second output is mix(golden ratio).
    assert mix(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    assert mix(1) == 0x910A2DEC89025CC1
    assert mix(catalog.MASK64) == 0xE4D971771B652C20


def test_mix_array_matches_scalar_mix():
    xs = [0, 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15, 123456789]
    got = mix_array(np.array(xs, dtype=np.uint64))
    assert [int(v) for v in got] == [mix(x) for x in xs]


def _catalog():
    c = tiny_config(seed=12345)
    c["item_tables"] = [{"name": "a", "rows": 1000, "lookups_per_item": 3},
                        {"name": "b", "rows": 7, "lookups_per_item": 2}]
    c["user_tables"] = [{"name": "u0", "rows": 1000, "history_length": 4},
                        {"name": "u1", "rows": 13, "history_length": 2}]
    return Catalog(c)


# item -> (item table 0 ids, item table 1 ids, history keys in user tables).
EXPECTED = {
    0: ([781, 755, 934], [2, 5], [598, 5]),
    1: ([430, 592, 866], [0, 1], [46, 7]),
    17: ([350, 990, 3], [3, 5], [834, 3]),
    499: ([667, 172, 879], [4, 2], [103, 3]),
}


def test_ids_match_independent_computation():
    cat = _catalog()
    items = np.array(list(EXPECTED))
    t0, t1 = cat.sparse_ids(items, 0), cat.sparse_ids(items, 1)
    h0, h1 = cat.history_keys(items, 0), cat.history_keys(items, 1)
    for row, item in enumerate(items):
        ids0, ids1, keys = EXPECTED[int(item)]
        assert t0[row].tolist() == ids0
        assert t1[row].tolist() == ids1
        assert [int(h0[row]), int(h1[row])] == keys


def test_ids_follow_the_formula_with_python_ints():
    cat = _catalog()
    items = np.arange(0, 500, 7)
    for t, rows in enumerate(cat.item_rows):
        got = cat.sparse_ids(items, t)
        for row, item in enumerate(items):
            h = mix(mix(12345) ^ int(item))
            want = [mix(h ^ ((t << 32) | k)) % rows
                    for k in range(cat.item_lookups[t])]
            assert got[row].tolist() == want
    for t, rows in enumerate(cat.user_rows):
        got = cat.history_keys(items, t)
        want = [mix(mix(mix(12345) ^ int(i)) ^ ((1 << 63) | (t << 32))) % rows
                for i in items]
        assert got.tolist() == want


def test_ids_stay_in_range():
    cat = _catalog()
    items = np.arange(cat.num_items)
    for t, rows in enumerate(cat.item_rows):
        ids = cat.sparse_ids(items, t)
        assert ids.shape == (cat.num_items, cat.item_lookups[t])
        assert ids.min() >= 0 and ids.max() < rows
    for t, rows in enumerate(cat.user_rows):
        keys = cat.history_keys(items, t)
        assert keys.min() >= 0 and keys.max() < rows
