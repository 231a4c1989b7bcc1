// libFuzzer target: arbitrary text as model.pbtxt. Parsing and validation
// must return a status, never crash; an accepted config must give sane
// derived sizes without overflow (UBSan checks the arithmetic).
#include <cstdint>
#include <string>

#include "common/model/catalog.h"
#include "common/model/model_config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = duet::common::ParseConfig(text, "fuzz.pbtxt");
  if (!config.ok()) return 0;
  const duet::common::ModelDims d = duet::common::ComputeDims(*config);
  FUZZ_CHECK(d.user_top_in > 0 && d.combined_in > 0);
  FUZZ_CHECK(duet::common::ScratchpadBytes(*config) > 0);
  (void)duet::common::SplitDepth(*config);
  (void)duet::common::ComputeSignature(*config);
  for (const std::string& file : duet::common::WeightFiles(*config)) {
    (void)duet::common::ExpectedTensors(*config, file);
  }
  const duet::common::Catalog catalog(*config);
  int64_t ids[16];
  for (int t = 0; t < config->item_tables_size(); ++t) {
    if (catalog.lookups_per_item(t) <= 16) catalog.ItemSparseIds(0, t, ids);
  }
  for (int t = 0; t < config->user_tables_size(); ++t) {
    FUZZ_CHECK(catalog.HistoryKey(0, t) < config->user_tables(t).rows());
  }
  return 0;
}
