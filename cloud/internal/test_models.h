// The small model the cloud's unit tests share: rm2 at row scale 0.0005
// (8 item tables of 250 rows, bags of 120, d = 64) with its cloud and
// user-table parts, generated once per test binary and removed at exit.
#ifndef DUET_CLOUD_INTERNAL_TEST_MODELS_H_
#define DUET_CLOUD_INTERNAL_TEST_MODELS_H_

#include <memory>

#include "common/model/model.h"
#include "common/model/test_util.h"
#include "gtest/gtest.h"

namespace duet::cloud {

// Null (with a test failure) when the model cannot be generated or loaded.
inline const common::Model* SmallRm2CloudModel() {
  struct Holder {
    Holder() {
      auto config = common::GenerateTestModel("rm2", 0.0005, dir.path());
      EXPECT_TRUE(config.ok()) << config.status();
      common::LoadOptions lo;
      lo.parts.edge = false;
      auto loaded = common::Model::Load(dir.path(), lo);
      EXPECT_TRUE(loaded.ok()) << loaded.status();
      if (loaded.ok()) model = *std::move(loaded);
    }
    common::TempDir dir;
    std::unique_ptr<common::Model> model;
  };
  static Holder holder;
  return holder.model.get();
}

}  // namespace duet::cloud

#endif  // DUET_CLOUD_INTERNAL_TEST_MODELS_H_
