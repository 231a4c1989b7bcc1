// A generated model shared by the tests of one binary: rm2 scaled to small
// tables (its edge part is full size: 24 user tables x 120 rows x d 64, a
// 96-value user vector with the default split), loaded with all three
// parts; and a UserState whose profile memo recomputes inline.
#ifndef DUET_EDGE_INTERNAL_TEST_MODEL_H_
#define DUET_EDGE_INTERNAL_TEST_MODEL_H_

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "common/model/model.h"
#include "common/model/test_util.h"
#include "edge/user_state.h"
#include "gtest/gtest.h"

namespace duet::edge::internal {

struct TestModel {
  std::unique_ptr<common::TempDir> dir;
  std::unique_ptr<common::Model> model;
};

// Generated on first use per (preset, seed, version); lives until the
// process exits, which removes its directory. Two versions of a release:
// SharedTestModel("rm2", 1, 1) and SharedTestModel("rm2", 2, 2).
inline const common::Model& SharedTestModel(const std::string& preset = "rm2",
                                            uint64_t seed = 1,
                                            uint32_t version = 1) {
  static std::map<std::tuple<std::string, uint64_t, uint32_t>, TestModel>
      models;
  TestModel& m = models[{preset, seed, version}];
  if (m.model == nullptr) {
    m.dir = std::make_unique<common::TempDir>();
    auto config =
        common::GenerateTestModel(preset, 0.001, m.dir->path(), seed, version);
    if (!config.ok()) {
      ADD_FAILURE() << config.status();
      std::abort();
    }
    common::LoadOptions options;
    options.parts.user_tables = true;
    auto model = common::Model::Load(m.dir->path(), options);
    if (!model.ok()) {
      ADD_FAILURE() << model.status();
      std::abort();
    }
    m.model = *std::move(model);
  }
  return *m.model;
}

// A fresh UserState of `model` whose memo recomputes run on the calling
// thread, so a profile update is in the memo when it returns.
inline std::unique_ptr<UserState> NewInlineUserState(
    const common::Model& model) {
  UserState::Options o;
  o.executor = [](std::function<void()> fn) { fn(); };
  auto state = UserState::Create(&model, o);
  if (!state.ok()) {
    ADD_FAILURE() << state.status();
    std::abort();
  }
  return *std::move(state);
}

}  // namespace duet::edge::internal

#endif  // DUET_EDGE_INTERNAL_TEST_MODEL_H_
