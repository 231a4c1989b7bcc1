"""DESIGN.md §2's hash item catalog: item id -> sparse ids and history keys.

Mirrors common/model/catalog.cc bit for bit, so training goes through exactly
the rows the C++ cloud and edge compute (the hashing trick; no catalog file).
All arithmetic is uint64 modulo 2^64: numpy's uint64 ops wrap, and the scalar
`mix` masks Python ints.
"""
import numpy as np

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def mix(x):
    """SplitMix64's finalizer on one uint64 (a Python int)."""
    x = (x + _GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * _M1) & MASK64
    x = ((x ^ (x >> 27)) * _M2) & MASK64
    return x ^ (x >> 31)


def mix_array(x):
    """`mix` elementwise on a uint64 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(_GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
    return x ^ (x >> np.uint64(31))


class Catalog:
    """Item ids [0, num_items) of one model config mapped to table rows.

    `config` is the normalized architecture dict (config.py): it needs
    catalog.seed, catalog.num_items and the tables' rows / lookups_per_item.
    """

    def __init__(self, config):
        self.seed = int(config["catalog"]["seed"])
        self.num_items = int(config["catalog"]["num_items"])
        self.item_rows = [int(t["rows"]) for t in config["item_tables"]]
        self.item_lookups = [int(t["lookups_per_item"])
                             for t in config["item_tables"]]
        self.user_rows = [int(t["rows"]) for t in config["user_tables"]]
        self._seed_hash = np.uint64(mix(self.seed))

    def item_hash(self, items):
        """h = mix(mix(catalog_seed) ^ item_id) for an array of item ids."""
        items = np.asarray(items, dtype=np.int64).astype(np.uint64)
        return mix_array(self._seed_hash ^ items)

    def sparse_ids(self, items, table):
        """[len(items), lookups_per_item(table)] int64 rows of item table
        `table`: mix(h ^ ((t << 32) | k)) % rows."""
        h = self.item_hash(items)[:, None]
        salt = (np.uint64(table) << np.uint64(32)) | np.arange(
            self.item_lookups[table], dtype=np.uint64)[None, :]
        rows = np.uint64(self.item_rows[table])
        return (mix_array(h ^ salt) % rows).astype(np.int64)

    def history_keys(self, items, table):
        """[len(items)] int64 rows of user table `table` that the edge appends
        when the user interacts with each item:
        mix(h ^ ((1 << 63) | (t << 32))) % rows."""
        h = self.item_hash(items)
        salt = np.uint64((1 << 63) | (table << 32))
        rows = np.uint64(self.user_rows[table])
        return (mix_array(h ^ salt) % rows).astype(np.int64)
