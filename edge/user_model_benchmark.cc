// Per-query user-model latency on one core (dynamic bottom MLP + pooled
// history read + user top MLP + quantize), and the background memo
// recompute (static bottom MLP), for rm1..rm5 in fp32 and in each int8
// arithmetic oneDNN computes exactly on this CPU
// (common/kernels/int8_arithmetic.h; ONEDNN_MAX_CPU_ISA=AVX2 shows a CPU
// without VNNI). Models are generated with tiny item/user tables: the edge part
// does not depend on table rows. Run: build/edge/edge_user_model_benchmark
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>

#include "benchmark/benchmark.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/model/model.h"
#include "common/model/test_util.h"
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

Loaded& Get(const std::string& preset, common::Int8Arithmetic arithmetic) {
  static auto* cache =
      new std::map<std::pair<std::string, common::Int8Arithmetic>, Loaded>();
  Loaded& l = (*cache)[{preset, arithmetic}];
  if (l.model != nullptr) return l;
  l.dir = std::make_unique<common::TempDir>();
  auto config = common::GenerateTestModel(preset, 1e-4, l.dir->path());
  if (!config.ok()) std::abort();
  common::LoadOptions lo;
  lo.parts.cloud = false;
  lo.int8_arithmetic = arithmetic;
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

// range(1): 0 = fp32, 1 + i = int8 in kAllInt8Arithmetics[i].
void BM_UserModel(benchmark::State& st) {
  const std::string preset = kPresets[st.range(0)];
  const Precision p = st.range(1) > 0 ? Precision::kInt8 : Precision::kFp32;
  const common::Int8Arithmetic arithmetic =
      p == Precision::kInt8 ? common::kAllInt8Arithmetics[st.range(1) - 1]
                            : common::Int8Kernels().recommended;
  const std::string label =
      preset +
      (p == Precision::kInt8
           ? std::string(" int8 ") + common::Int8ArithmeticName(arithmetic)
           : std::string(" fp32"));
  if (!common::Int8Kernels().IsExact(arithmetic)) {
    st.SkipWithError((label + ": saturates on this CPU").c_str());
    return;
  }
  Loaded& l = Get(preset, arithmetic);
  auto um = *UserModel::Create(l.model.get(), {p, p});
  std::vector<float> c(l.model->dims().dynamic_in, 0.5f);
  UserModel::Output out;
  for (auto _ : st) {
    benchmark::DoNotOptimize(l.state->ComputeUserVector(*um, c.data(), &out));
  }
  st.SetLabel(label);
}
BENCHMARK(BM_UserModel)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMicrosecond);

void BM_MemoRecompute(benchmark::State& st) {
  const std::string preset = kPresets[st.range(0)];
  Loaded& l = Get(preset, common::Int8Kernels().recommended);
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
