// The edge's per-query user model (dynamic bottom MLP + pooled history read +
// user top MLP + quantize; one core) for each preset under each top-MLP split
// (DESIGN.md §2, "Split depth and personalization"), fp32 and int8 user top
// MLP side by side in every iteration (alternating which runs first), medians
// in fp32_us / int8_us. The int8 arithmetic is the one this CPU computes
// exactly (common/kernels/int8_arithmetic.h: full with VNNI, else
// reduced-weights); edge/user_model_benchmark.cc times every arithmetic for
// the default split.
//   edge_split_benchmark [--benchmark_filter=...]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/model/model.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"
#include "edge/user_model.h"
#include "edge/user_state.h"

namespace duet::edge {
namespace {

using Clock = std::chrono::steady_clock;

struct Loaded {
  std::unique_ptr<common::Model> model;
  std::unique_ptr<UserState> state;
  std::unique_ptr<UserModel> fp32, int8;
};

// The edge part does not depend on table rows: tiny tables.
Loaded& Get(const std::string& preset, common::PresetSplit split) {
  static auto* cache = new std::map<std::string, Loaded>();
  Loaded& l =
      (*cache)[preset + "/" + std::string(common::PresetSplitName(split))];
  if (l.model != nullptr) return l;
  // Generated once under /tmp, named by preset and split.
  const std::string dir = "/tmp/duet_bench_edge_" + preset + "_" +
                          std::string(common::PresetSplitName(split));
  auto config = common::PresetConfig(preset, 1e-4, split);
  common::GenerateOptions options;
  options.out_dir = dir;
  if (!config.ok() || !common::GenerateModel(*config, options, nullptr).ok()) {
    std::abort();
  }
  common::LoadOptions lo;
  lo.parts.cloud = false;
  lo.int8_arithmetic = common::Int8Kernels().recommended;
  auto model = common::Model::Load(dir, lo);
  if (!model.ok()) std::abort();
  l.model = *std::move(model);
  UserState::Options so;
  so.executor = [](std::function<void()> fn) { fn(); };
  l.state = *UserState::Create(l.model.get(), so);
  std::mt19937 rng(1);  // a full history of random rows
  std::normal_distribution<float> dist(0, 0.1f);
  std::vector<float> rows(l.model->dims().pooled);
  for (int i = 0; i < 256; ++i) {
    for (float& x : rows) x = dist(rng);
    l.state->PushInteraction(rows);
  }
  l.fp32 =
      *UserModel::Create(l.model.get(), {Precision::kFp32, Precision::kInt8});
  l.int8 =
      *UserModel::Create(l.model.get(), {Precision::kInt8, Precision::kInt8});
  return l;
}

double MedianOf(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void BM_UserModelSplit(benchmark::State& st, const std::string& preset,
                       common::PresetSplit split) {
  Loaded& l = Get(preset, split);
  const UserModel* models[2] = {l.fp32.get(), l.int8.get()};
  std::vector<float> c(l.model->dims().dynamic_in, 0.5f);
  UserModel::Output out;
  std::vector<double> times[2];
  int64_t it = 0;
  for (auto _ : st) {
    for (int k = 0; k < 2; ++k) {
      const int p = (k + it) % 2;
      const auto t0 = Clock::now();
      benchmark::DoNotOptimize(
          l.state->ComputeUserVector(*models[p], c.data(), &out));
      times[p].push_back(
          std::chrono::duration<double>(Clock::now() - t0).count());
    }
    ++it;
  }
  st.counters["fp32_us"] = 1e6 * MedianOf(times[0]);
  st.counters["int8_us"] = 1e6 * MedianOf(times[1]);
  st.SetLabel(std::string("int8 ") +
              common::Int8ArithmeticName(common::Int8Kernels().recommended));
}

void Register() {
  for (const char* preset : {"rm1", "rm2", "rm3", "rm4", "rm5"}) {
    for (auto split :
         {common::PresetSplit::kPersonalized, common::PresetSplit::kPaper}) {
      benchmark::RegisterBenchmark(
          (std::string("user_model/") + preset + "/" +
           std::string(common::PresetSplitName(split)))
              .c_str(),
          [preset = std::string(preset), split](benchmark::State& s) {
            BM_UserModelSplit(s, preset, split);
          })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  }
}

}  // namespace
}  // namespace duet::edge

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  duet::edge::Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
