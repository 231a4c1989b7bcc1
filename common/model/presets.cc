#include "common/model/presets.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/model_config.h"

namespace duet::common {
namespace {

using duet::v1::ModelConfig;

// One row of Table 2, split the way the paper splits it (§4 of the paper):
// dense inputs and bottom-MLP widths 87.5 % static / 12.5 % dynamic, tables
// 75 % user / 25 % item, each split top-MLP layer 75 % user / 25 % item by
// width (RM5: 60 / 40). `top` is the whole top MLP; how many of its layers
// are split is chosen per model (SplitDepthFor), the rest are combined.
struct Preset {
  const char* name;
  const char* description;
  int dim;
  int static_dense, dynamic_dense;
  std::vector<int> static_bottom, dynamic_bottom;
  std::vector<int> top;  // last width 1 (the CTR)
  double user_share;     // of each split layer's width
  int paper_split_depth;
  int user_tables, item_tables;
  int64_t rows;
  int user_history;  // lookups per user table (= scratchpad history length)
  int item_lookups;  // lookups per item table
  int64_t num_items;
};

const std::vector<Preset>& Presets() {
  static const auto* presets = new std::vector<Preset>{
      {"tiny",
       "Small model for tests: every feature of the rm presets.",
       8,
       14,
       2,
       {12, 7},
       {2, 1},
       {32, 16, 1},
       0.75,
       2,
       3,
       1,
       1000,
       4,
       3,
       500},
      // Bottom 128-64-32 (128 dense inputs), top 256-64-1, 8 tables x 80
      // lookups, 4M rows, d = 32.
      {"rm1",
       "DLRM-RMC1 (Duet Table 2 RM1): embedding dominated.",
       32,
       112,
       16,
       {56, 28},
       {8, 4},
       {256, 64, 1},
       0.75,
       2,
       6,
       2,
       4000000,
       80,
       80,
       1000000},
      // Bottom 256-128-64, top 128-64-1, 32 tables x 120 lookups, 500K rows,
      // d = 64.
      {"rm2",
       "DLRM-RMC2 (Duet Table 2 RM2): embedding dominated.",
       64,
       224,
       32,
       {112, 56},
       {16, 8},
       {128, 64, 1},
       0.75,
       2,
       24,
       8,
       500000,
       120,
       120,
       1000000},
      // Bottom 2560-1024-256-32, top 512-256-1, 10 tables x 20, 2M rows.
      {"rm3",
       "DLRM-RMC3 (Duet Table 2 RM3): bottom-MLP dominated.",
       32,
       2240,
       320,
       {896, 224, 28},
       {128, 32, 4},
       {512, 256, 1},
       0.75,
       2,
       7,
       3,
       2000000,
       20,
       20,
       1000000},
      // Bottom 512-256-32, top 2560-1024-1, 10 tables x 20, 2M rows: in the
      // paper split the heavy user top MLP 256 -> 1920 -> 768 (1.9 MB in
      // int8).
      {"rm4",
       "Synthetic (Duet Table 2 RM4): top-MLP dominated.",
       32,
       448,
       64,
       {224, 28},
       {32, 4},
       {2560, 1024, 1},
       0.75,
       2,
       7,
       3,
       2000000,
       20,
       20,
       1000000},
      // DIN (Duet Table 2 RM5): top 200-80-2, first layer split 60/40, last
      // two layers combined; no dense features. Tables user-id (1 lookup) and
      // two history tables (199 lookups each); the candidate's own lookups in
      // those shared tables become two item tables of 1 lookup. Attention is
      // approximated by SUM pooling; CTR is one sigmoid output instead of a
      // 2-way softmax (equivalent up to reparametrization).
      {"rm5",
       "DIN (Duet Table 2 RM5), approximated: SUM pooling instead of "
       "attention, sigmoid CTR.",
       32,
       0,
       0,
       {},
       {},
       {200, 80, 1},
       0.6,
       1,
       0,
       0,
       1000000,
       0,
       1,
       1000000},
  };
  return *presets;
}

// Personalizing: split all but the last two layers (at least one), so the
// combined top keeps a hidden layer after the split one. Paper: as Duet.
int SplitDepthFor(const Preset& p, PresetSplit split) {
  if (split == PresetSplit::kPaper) return p.paper_split_depth;
  return std::max(1, static_cast<int>(p.top.size()) - 2);
}

void AddWidths(google::protobuf::RepeatedField<int32_t>* out,
               const std::vector<int>& widths) {
  for (int w : widths) out->Add(w);
}

}  // namespace

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const auto& p : Presets()) names.push_back(p.name);
  return names;
}

absl::string_view PresetSplitName(PresetSplit split) {
  return split == PresetSplit::kPaper ? "paper" : "personalized";
}

absl::StatusOr<PresetSplit> ParsePresetSplit(absl::string_view name) {
  if (name == "personalized") return PresetSplit::kPersonalized;
  if (name == "paper") return PresetSplit::kPaper;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown split '", name, "', expected personalized or paper"));
}

absl::StatusOr<ModelConfig> PresetConfig(absl::string_view preset,
                                         double rows_scale, PresetSplit split) {
  if (!(rows_scale > 0.0 && rows_scale <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows_scale must be in (0, 1], got ", rows_scale));
  }
  const Preset* p = nullptr;
  for (const auto& candidate : Presets()) {
    if (candidate.name == preset) p = &candidate;
  }
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset '", preset, "', expected one of ",
                     absl::StrJoin(PresetNames(), ", ")));
  }
  auto scaled = [rows_scale](int64_t rows) {
    return std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(rows * rows_scale)));
  };

  ModelConfig c;
  c.set_name(p->name);
  c.set_version(1);
  c.set_embedding_dim(p->dim);
  c.set_num_static_dense(p->static_dense);
  c.set_num_dynamic_dense(p->dynamic_dense);
  AddWidths(c.mutable_static_bottom_layers(), p->static_bottom);
  AddWidths(c.mutable_dynamic_bottom_layers(), p->dynamic_bottom);
  const int depth = SplitDepthFor(*p, split);
  for (int i = 0; i < static_cast<int>(p->top.size()); ++i) {
    const int w = p->top[i];
    if (i >= depth) {
      c.add_combined_top_layers(w);
      continue;
    }
    const int user = static_cast<int>(std::lround(w * p->user_share));
    c.add_user_top_layers(user);
    c.add_item_top_layers(w - user);
  }
  c.set_split_depth(depth);
  if (RankingCanDependOnUser(c)) {
    c.set_description(absl::StrCat(
        p->description, " Split: ", PresetSplitName(split), ", ", depth,
        " top layer(s) split, ", c.combined_top_layers_size(),
        " combined: rankings depend on the user."));
  } else {
    c.set_description(absl::StrCat(
        p->description, " Split: ", PresetSplitName(split), ", ", depth,
        " top layers split, one linear layer combined: the order of a "
        "candidate set is the same for every user (the paper's split)."));
  }
  c.set_rows_scale(rows_scale);
  c.mutable_catalog()->set_num_items(p->num_items);

  if (std::string(p->name) == "rm5") {
    struct {
      const char* name;
      int history;
    } user[] = {
        {"user_id", 1}, {"history_goods", 199}, {"history_category", 199}};
    for (const auto& u : user) {
      auto* t = c.add_user_tables();
      t->set_name(u.name);
      t->set_rows(scaled(p->rows));
      t->set_history_length(u.history);
    }
    for (const char* name : {"candidate_goods", "candidate_category"}) {
      auto* t = c.add_item_tables();
      t->set_name(name);
      t->set_rows(scaled(p->rows));
      t->set_lookups_per_item(p->item_lookups);
    }
    return c;
  }
  for (int t = 0; t < p->user_tables; ++t) {
    auto* u = c.add_user_tables();
    u->set_name(absl::StrCat("user_", t));
    u->set_rows(scaled(p->rows));
    // tiny varies history lengths so tests cover unequal rings.
    u->set_history_length(std::string(p->name) == "tiny" ? p->user_history + t
                                                         : p->user_history);
  }
  for (int t = 0; t < p->item_tables; ++t) {
    auto* it = c.add_item_tables();
    it->set_name(absl::StrCat("item_", t));
    it->set_rows(scaled(p->rows));
    it->set_lookups_per_item(p->item_lookups);
  }
  return c;
}

}  // namespace duet::common
