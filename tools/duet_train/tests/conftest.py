"""Shared test helpers: the package is imported from tools/ (as the wrapper
script does), and configs are built here, never asked of duet-model."""
import os
import sys

import pytest

TOOLS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from duet_train import config as cfg  # noqa: E402


def tiny_config(split="personalized", num_items=500, seed=12345):
    """The tiny preset's architecture as duet-model prints it (proto3 JSON:
    64-bit integers as strings), with `split` 'personalized' (one split
    layer, the combined top keeps a hidden layer) or 'paper' (two split
    layers, one linear combined layer)."""
    raw = {
        "name": "tiny", "version": 1, "embeddingDim": 8,
        "numStaticDense": 14, "numDynamicDense": 2,
        "staticBottomLayers": [12, 7], "dynamicBottomLayers": [2, 1],
        "userTables": [{"name": f"user_{t}", "rows": "1000",
                        "historyLength": 4 + t} for t in range(3)],
        "itemTables": [{"name": "item_0", "rows": "1000",
                        "lookupsPerItem": 3}],
        "catalog": {"seed": str(seed), "numItems": str(num_items)},
        "rowsScale": 1,
    }
    if split == "paper":
        raw.update(userTopLayers=[24, 12], itemTopLayers=[8, 4],
                   combinedTopLayers=[1], splitDepth=2)
    else:
        raw.update(userTopLayers=[24], itemTopLayers=[8],
                   combinedTopLayers=[16, 1], splitDepth=1)
    return cfg.normalize(raw)


@pytest.fixture
def tiny():
    return tiny_config()


@pytest.fixture
def duet_model():
    """The C++ duet-model binary, for the checks that cross into C++. ctest
    always passes it (DUET_MODEL, tools/CMakeLists.txt); a bare pytest run
    without a build skips those checks, saying so."""
    tool = cfg.find_duet_model()
    if tool is None:
        pytest.skip("duet-model not built (set DUET_MODEL to its path)")
    return tool
