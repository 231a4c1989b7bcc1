// The models the cloud's unit tests share, generated once per test binary
// and removed at exit: each preset at a small row scale (rm2 at 0.0005 has
// 8 item tables of 250 rows, bags of 120, d = 64; tiny at full size).
#ifndef DUET_CLOUD_INTERNAL_TEST_MODELS_H_
#define DUET_CLOUD_INTERNAL_TEST_MODELS_H_

#include <map>
#include <memory>
#include <string>

#include "common/model/model.h"
#include "common/model/test_util.h"
#include "gtest/gtest.h"

namespace duet::cloud {

// The directory of `preset`'s generated model.
inline const std::string& ModelDir(const std::string& preset) {
  static std::map<std::string, common::TempDir> dirs;
  auto it = dirs.find(preset);
  if (it == dirs.end()) {
    it = dirs.try_emplace(preset).first;
    const double scale = preset == "tiny" ? 1.0 : 0.0005;
    auto config = common::GenerateTestModel(preset, scale, it->second.path());
    EXPECT_TRUE(config.ok()) << config.status();
  }
  return it->second.path();
}

// rm2's cloud and user-table parts, loaded once. Null (with a test failure)
// when the model cannot be generated or loaded.
inline const common::Model* SmallRm2CloudModel() {
  static const std::unique_ptr<const common::Model> model = [] {
    common::LoadOptions lo;
    lo.parts.edge = false;
    auto loaded = common::Model::Load(ModelDir("rm2"), lo);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok()
               ? std::unique_ptr<const common::Model>(*std::move(loaded))
               : nullptr;
  }();
  return model.get();
}

}  // namespace duet::cloud

#endif  // DUET_CLOUD_INTERNAL_TEST_MODELS_H_
