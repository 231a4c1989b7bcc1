"""Architecture JSON: normalization of protobuf JSON, scaling, validation,
and (when DUET_MODEL is set) what `duet-model preset --json` prints."""
import pytest

from duet_train import config as cfg
from conftest import tiny_config


def test_normalize_reads_proto3_json(tiny):
    # conftest writes lowerCamelCase keys and 64-bit integers as strings.
    assert tiny["embedding_dim"] == 8
    assert tiny["user_tables"][2] == {"name": "user_2", "rows": 1000,
                                      "history_length": 6}
    assert tiny["item_tables"][0]["lookups_per_item"] == 3
    assert tiny["catalog"] == {"seed": 12345, "num_items": 500}
    assert tiny["split_depth"] == 1 and tiny["rows_scale"] == 1.0


def test_omitted_fields_take_proto3_defaults():
    c = cfg.normalize({"name": "m", "embedding_dim": 4,
                       "user_tables": [{"rows": "9", "history_length": 2}],
                       "item_tables": [{"rows": "9", "lookups_per_item": 1}],
                       "user_top_layers": [3, 2], "combined_top_layers": [1]})
    assert c["num_static_dense"] == 0 and c["static_bottom_layers"] == []
    assert c["item_top_layers"] == [] and c["version"] == 0
    assert c["split_depth"] == 2  # printed before split_depth existed


@pytest.mark.parametrize("change, message", [
    ({"combined_top_layers": [4]}, "must end with a layer of width 1"),
    ({"user_top_layers": []}, "user_top_layers is empty"),
    ({"num_static_dense": 0}, "static_bottom_layers given but"),
    ({"item_tables": []}, "must both be non-empty"),
    ({"name": ""}, "name is empty"),
])
def test_validate_names_the_problem(tiny, change, message):
    with pytest.raises(ValueError, match=message):
        cfg.validate(dict(tiny, **change))


def test_scale_widths_keeps_the_ctr_layer_and_zero_dense_counts(tiny):
    s = cfg.scale_widths(dict(tiny, num_dynamic_dense=0,
                              dynamic_bottom_layers=[]), 0.25)
    assert s["static_bottom_layers"] == [3, 2]  # 12 * .25, 7 * .25 -> 1.75
    assert s["num_static_dense"] == 4 and s["num_dynamic_dense"] == 0
    assert s["user_top_layers"] == [6] and s["combined_top_layers"] == [4, 1]
    assert cfg.scale_widths(tiny, 0.01)["item_top_layers"] == [1]
    assert tiny["user_top_layers"] == [24]  # the input is not modified


def test_scale_rows_rounds_like_cpp_and_records_the_scale(tiny):
    s = cfg.scale_rows(tiny, 0.0025)  # 1000 * 0.0025 = 2.5 -> 3 (llround)
    assert [t["rows"] for t in s["user_tables"]] == [3, 3, 3]
    assert s["rows_scale"] == 0.0025
    assert cfg.scale_rows(tiny, 1e-9)["item_tables"][0]["rows"] == 1
    assert cfg.auto_rows_scale(tiny, 100) == 0.4  # 4 rows per item
    assert cfg.auto_rows_scale(tiny, 5000) == 1.0
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        cfg.scale_rows(tiny, 1.5)


def test_dims(tiny):
    d = cfg.dims(tiny)
    assert d["user_top_in"] == 7 + 1 + 3 * 8
    assert d["combined_in"] == 24 + 8
    assert cfg.history_length(tiny) == 6


def test_duet_model_preset_json_is_what_the_tests_assume(duet_model):
    tool = duet_model
    for split in ("personalized", "paper"):
        got = cfg.preset_config(tool, "tiny", split)
        want = tiny_config(split)
        for key in want:
            if key not in ("catalog", "description"):
                assert got[key] == want[key], (split, key)
    with pytest.raises(RuntimeError, match="unknown preset"):
        cfg.preset_config(tool, "rm9", "paper")
