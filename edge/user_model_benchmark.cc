// Per-query user-model latency on one core (dynamic bottom MLP + pooled
// history read + user top MLP + quantize), and the background memo
// recompute (static bottom MLP), for rm1..rm5 in int8 and fp32. Models are
// generated with tiny item/user tables: the edge part does not depend on
// table rows. Run: build/edge/edge_user_model_benchmark
#include <map>
#include <memory>
#include <random>
#include <string>

#include "benchmark/benchmark.h"
#include "common/model.h"
#include "common/test_util.h"
#include "edge/user_model.h"
#include "edge/user_state.h"

namespace duet::edge {
namespace {

const char* const kPresets[] = {"rm1", "rm2", "rm3", "rm4", "rm5"};

struct Loaded {
  std::unique_ptr<common::TempDir> dir;
  std::unique_ptr<common::Model> model;
  std::unique_ptr<UserState> state;
};

Loaded& Get(const std::string& preset) {
  static auto* cache = new std::map<std::string, Loaded>();
  Loaded& l = (*cache)[preset];
  if (l.model != nullptr) return l;
  l.dir = std::make_unique<common::TempDir>();
  auto config = common::GenerateTestModel(preset, 1e-4, l.dir->path());
  if (!config.ok()) std::abort();
  common::LoadOptions lo;
  lo.parts.cloud = false;
  auto model = common::Model::Load(l.dir->path(), lo);
  if (!model.ok()) std::abort();
  l.model = *std::move(model);
  UserState::Options so;
  so.executor = [](std::function<void()> fn) { fn(); };
  l.state = *UserState::Create(l.model.get(), so);
  // A full history of random rows.
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0, 0.1f);
  std::vector<float> rows(l.model->dims().pooled);
  for (int i = 0; i < 256; ++i) {
    for (float& x : rows) x = dist(rng);
    l.state->PushInteraction(rows);
  }
  return l;
}

void BM_UserModel(benchmark::State& st) {
  const std::string preset = kPresets[st.range(0)];
  const Precision p = st.range(1) ? Precision::kInt8 : Precision::kFp32;
  Loaded& l = Get(preset);
  auto um = *UserModel::Create(l.model.get(), {p, p});
  std::vector<float> c(l.model->dims().dynamic_in, 0.5f);
  UserModel::Output out;
  for (auto _ : st) {
    benchmark::DoNotOptimize(l.state->ComputeUserVector(*um, c.data(), &out));
  }
  st.SetLabel(preset + (p == Precision::kInt8 ? " int8" : " fp32"));
}
BENCHMARK(BM_UserModel)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {1, 0}})
    ->Unit(benchmark::kMicrosecond);

void BM_MemoRecompute(benchmark::State& st) {
  const std::string preset = kPresets[st.range(0)];
  Loaded& l = Get(preset);
  std::vector<float> s(l.model->dims().static_in, 0.25f);
  uint64_t v = 1;
  for (auto _ : st) {
    benchmark::DoNotOptimize(l.state->ReplayProfile(s, v++));
  }
  st.SetLabel(preset);
}
BENCHMARK(BM_MemoRecompute)->DenseRange(0, 4)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace duet::edge

BENCHMARK_MAIN();
