// The cloud item model at N candidates against its roofline on this machine:
//   roofline = rows gathered x the limit probe's time per row (the simplest
//              prefetching random-row gather over the same tables and ids)
//            + the item top MLP's time at M = N (oneDNN, same thread)
// Reports each part and the ratio item_model / roofline (issue 3's target:
// <= 1.25 at N = 1024). One worker, so the figures are per core.
// combined_top/<preset>/<split>: the user contribution's two strategies
// (memory load, recompute; DESIGN.md §5.3) side by side in every iteration
// (alternating which runs first), medians in load_us / recompute_us: where
// recompute_over_load crosses 1 is the selector's crossover.
// split_vs_monolithic/<preset>: one query's in-process cloud work at N,
// fresh random candidates each iteration, the five side by side (order
// rotating): the monolithic evaluator (MonolithicScore's), the split item
// side + combined top computed (no cache) over fp32 and over int8 item
// embedding tables (--item_embeddings int8), and the fp32 one with the
// precomputed item table (ModelRuntime, DUET_BENCH_ITEM_TABLE_MB, default
// 1024 as duet-cloud's --item_table_budget_mb, built before timing) in fp32
// rows and in int8 rows. Medians in mono_ms / split_ms / split8_ms /
// table_ms / table8_ms, ratios mono_over_split / split_over_split8 /
// mono_over_table / mono_over_table8, the tables' coverage (hit ratios),
// sizes and build time.
// item_side_batched/<preset>/<n>: cross-query batching of the item side
// (BM_ItemSideBatched).
//   item_model_benchmark [--benchmark_filter=...]
//   DUET_BENCH_MODEL=DIR uses an existing model directory for item_model/;
//   by default rm2 and rm3 are generated (personalized split) at
//   DUET_BENCH_ROWS_SCALE (default 0.25: DRAM-resident item tables) under
//   /tmp, named by preset, split and scale.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "cloud/combined_top.h"
#include "cloud/scoring_core.h"
#include "common/base/status_macros.h"
#include "common/model/model.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"
#include "common/model/reference_model.h"

namespace duet::cloud {
namespace {

using Clock = std::chrono::steady_clock;

// Generated once; the name holds the split, so models of the two splits
// (and those written before splits existed) are never mistaken for another.
std::string GeneratedModelDir(const std::string& preset,
                              common::PresetSplit split, double scale) {
  const std::string dir = "/tmp/duet_bench_" + preset + "_" +
                          std::string(common::PresetSplitName(split)) + "_" +
                          std::to_string(scale);
  common::LoadOptions probe;
  probe.parts = {false, true, false};
  probe.verify_checksums = false;
  if (common::Model::Load(dir, probe).ok()) return dir;
  auto config = common::PresetConfig(preset, scale, split);
  common::GenerateOptions options;
  options.out_dir = dir;
  if (!config.ok() || !common::GenerateModel(*config, options, nullptr).ok()) {
    std::abort();
  }
  return dir;
}

std::string ModelDir(const std::string& preset) {
  if (const char* dir = std::getenv("DUET_BENCH_MODEL")) return dir;
  const char* scale_env = std::getenv("DUET_BENCH_ROWS_SCALE");
  const double scale = scale_env != nullptr ? std::atof(scale_env) : 0.25;
  return GeneratedModelDir(preset, common::PresetSplit::kPersonalized, scale);
}

struct Fixture {
  std::unique_ptr<ScoringCore> core;
  std::vector<int64_t> candidates;
  std::vector<std::vector<int64_t>> ids;  // per item table: n * bag ids
};

Fixture& GetFixture(const std::string& preset, int n) {
  static std::map<std::string, Fixture> fixtures;
  const std::string key = preset + "/" + std::to_string(n);
  auto it = fixtures.find(key);
  if (it != fixtures.end()) return it->second;
  common::LoadOptions lo;
  lo.parts = {false, true, true};
  lo.verify_checksums = false;
  auto model = common::Model::Load(ModelDir(preset), lo);
  if (!model.ok()) std::abort();
  ScoringCoreOptions o;
  o.workers = 1;
  o.max_candidates = 1024;
  o.item_cache_entries = 0;
  o.force_lookup = LookupStrategy::kBatch;
  o.force_user = UserStrategy::kLoad;
  o.placement_sample_items = 1000;
  auto core = ScoringCore::Create(std::move(*model), o);
  if (!core.ok()) std::abort();
  Fixture f;
  f.core = std::move(*core);
  const common::Model& m = f.core->model();
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> item(0, m.catalog().num_items() - 1);
  for (int j = 0; j < n; ++j) f.candidates.push_back(item(rng));
  for (int t = 0; t < m.num_item_tables(); ++t) {
    const int bag = m.catalog().lookups_per_item(t);
    std::vector<int64_t> ids(static_cast<size_t>(n) * bag);
    for (int j = 0; j < n; ++j) {
      m.catalog().ItemSparseIds(f.candidates[j], t, ids.data() + j * bag);
    }
    f.ids.push_back(std::move(ids));
  }
  return fixtures.emplace(key, std::move(f)).first->second;
}

// The limit probe: sum rows at the given ids, prefetching 16 ahead.
float Probe(const common::EmbeddingTable& table,
            const std::vector<int64_t>& ids) {
  const char* base = static_cast<const char*>(table.data);
  const size_t stride = table.row_stride();
  const int dim = table.dim;
  __m256 acc = _mm256_setzero_ps();
  const size_t n = ids.size();
  for (size_t k = 0; k < n; ++k) {
    if (k + 16 < n) {
      const char* p = base + ids[k + 16] * stride;
      for (size_t off = 0; off < stride; off += 64)
        _mm_prefetch(p + off, _MM_HINT_T0);
    }
    const float* row = reinterpret_cast<const float*>(base + ids[k] * stride);
    for (int j = 0; j + 8 <= dim; j += 8) {
      acc = _mm256_add_ps(acc, _mm256_loadu_ps(row + j));
    }
  }
  float out[8];
  _mm256_storeu_ps(out, acc);
  return out[0];
}

void BM_ItemModelVsRoofline(benchmark::State& state, const std::string& preset,
                            LookupStrategy strategy) {
  const int n = static_cast<int>(state.range(0));
  Fixture& f = GetFixture(preset, n);
  const auto runtime = f.core->runtime();
  const common::Model& m = runtime->model();
  const int item_in = m.dims().item_top_in, item_out = m.dims().item_out;
  std::vector<float> v(static_cast<size_t>(n) * item_out);
  std::vector<float> features(static_cast<size_t>(n) * item_in, 0.5f);
  double item_s = 0, probe_s = 0, mlp_s = 0;
  int64_t rows = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    if (!runtime->item_model()
             .ComputeUncached(f.candidates.data(), n, strategy, v.data())
             .ok()) {
      state.SkipWithError("item model failed");
      return;
    }
    auto t1 = Clock::now();
    float sink = 0;
    for (int t = 0; t < m.num_item_tables(); ++t) {
      sink += Probe(m.item_table(t), f.ids[t]);
      rows += static_cast<int64_t>(f.ids[t].size());
    }
    benchmark::DoNotOptimize(sink);
    auto t2 = Clock::now();
    if (m.item_top() != nullptr &&
        !m.item_top()->Run(features.data(), n, v.data()).ok()) {
      state.SkipWithError("item top failed");
      return;
    }
    auto t3 = Clock::now();
    item_s += std::chrono::duration<double>(t1 - t0).count();
    probe_s += std::chrono::duration<double>(t2 - t1).count();
    mlp_s += std::chrono::duration<double>(t3 - t2).count();
  }
  const double iters = static_cast<double>(state.iterations());
  state.counters["item_ms"] = 1e3 * item_s / iters;
  state.counters["probe_ms"] = 1e3 * probe_s / iters;
  state.counters["mlp_ms"] = 1e3 * mlp_s / iters;
  state.counters["probe_ns_per_row"] =
      1e9 * probe_s / static_cast<double>(rows);
  state.counters["vs_roofline"] = item_s / (probe_s + mlp_s);
  state.counters["candidates_per_s"] = n * iters / item_s;
}

double MedianOf(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The combined top MLP does not depend on table sizes: tiny tables suffice.
void BM_CombinedTop(benchmark::State& state, const std::string& preset,
                    common::PresetSplit split) {
  const int n = static_cast<int>(state.range(0));
  static std::map<std::string, std::unique_ptr<common::Model>> models;
  const std::string key =
      preset + "/" + std::string(common::PresetSplitName(split));
  std::unique_ptr<common::Model>& model = models[key];
  if (model == nullptr) {
    common::LoadOptions lo;
    lo.parts = {false, true, false};
    lo.verify_checksums = false;
    auto loaded =
        common::Model::Load(GeneratedModelDir(preset, split, 0.001), lo);
    if (!loaded.ok()) std::abort();
    model = std::move(*loaded);
  }
  auto top = CombinedTop::Create(model.get());
  if (!top.ok()) std::abort();
  const common::ModelDims& d = model->dims();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(0, 1);
  std::vector<float> u(d.user_out), v(static_cast<size_t>(n) * d.item_out);
  std::vector<float> ctr(n);
  for (float& x : u) x = dist(rng);
  for (float& x : v) x = dist(rng);
  std::vector<double> times[2];
  int64_t it = 0;
  for (auto _ : state) {
    for (int k = 0; k < 2; ++k) {
      const int c = (k + it) % 2;  // alternate which strategy runs first
      const auto t0 = Clock::now();
      if (!(*top)
               ->Score(u.data(), v.data(), n, static_cast<UserStrategy>(c),
                       ctr.data())
               .ok()) {
        state.SkipWithError("combined top failed");
        return;
      }
      times[c].push_back(
          std::chrono::duration<double>(Clock::now() - t0).count());
      benchmark::DoNotOptimize(ctr.data());
    }
    ++it;
  }
  const double load = MedianOf(times[0]), recompute = MedianOf(times[1]);
  state.counters["load_us"] = 1e6 * load;
  state.counters["recompute_us"] = 1e6 * recompute;
  state.counters["recompute_over_load"] = recompute / load;
}

struct SplitFixture {
  std::unique_ptr<common::ThreadPool> pool;
  std::shared_ptr<ModelRuntime> computed, computed8, table, table8;
  double build_s = 0;
};

SplitFixture& GetSplitFixture(const std::string& preset) {
  static std::map<std::string, SplitFixture> fixtures;
  auto it = fixtures.find(preset);
  if (it != fixtures.end()) return it->second;
  const char* scale_env = std::getenv("DUET_BENCH_ROWS_SCALE");
  const double scale = scale_env != nullptr ? std::atof(scale_env) : 0.25;
  const char* mb_env = std::getenv("DUET_BENCH_ITEM_TABLE_MB");
  const int64_t mb = mb_env != nullptr ? std::atoll(mb_env) : 1024;
  const std::string dir =
      GeneratedModelDir(preset, common::PresetSplit::kPersonalized, scale);
  SplitFixture f;
  f.pool = std::make_unique<common::ThreadPool>(1, "bench");
  // 0: no table; 1: fp32 rows; 2: int8 rows; 3: no table, int8 embeddings.
  for (int with_table = 0; with_table < 4; ++with_table) {
    common::LoadOptions lo;
    lo.parts = {true, true, true};
    lo.verify_checksums = false;
    auto model = common::Model::Load(dir, lo);
    if (!model.ok()) std::abort();
    ModelRuntime::Options o;
    o.max_candidates = 1024;
    o.buffer_sets = 1;
    o.force_lookup = LookupStrategy::kBatch;
    o.force_user = UserStrategy::kLoad;
    o.placement.num_workers = 1;
    o.placement_sample_items = 1000;
    o.item_cache_entries = 0;
    o.item_table_budget_bytes =
        with_table == 1 || with_table == 2 ? mb << 20 : 0;
    o.item_embeddings = with_table == 3 ? ItemEmbeddingPrecision::kInt8
                                        : ItemEmbeddingPrecision::kFp32;
    o.item_table_precision = with_table == 2 ? ItemTablePrecisionChoice::kInt8
                                             : ItemTablePrecisionChoice::kFp32;
    const auto t0 = Clock::now();
    auto rt = ModelRuntime::Create(*std::move(model), o, f.pool.get());
    if (!rt.ok()) std::abort();
    (*rt)->WaitForItemTable();
    (with_table == 0   ? f.computed
     : with_table == 1 ? f.table
     : with_table == 2 ? f.table8
                       : f.computed8) = *rt;
    if (with_table == 1) {
      f.build_s = std::chrono::duration<double>(Clock::now() - t0).count();
    }
  }
  return fixtures.emplace(preset, std::move(f)).first->second;
}

void BM_SplitVsMonolithic(benchmark::State& state, const std::string& preset) {
  const int n = static_cast<int>(state.range(0));
  SplitFixture& f = GetSplitFixture(preset);
  const common::Model& m = f.computed->model();
  const common::ModelDims& d = m.dims();
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int64_t> item(0, m.catalog().num_items() - 1);
  std::uniform_real_distribution<float> unit(0, 1);
  common::UserInputs user;
  user.static_features.resize(d.static_in);
  user.dynamic_features.resize(d.dynamic_in);
  for (float& x : user.static_features) x = unit(rng);
  for (float& x : user.dynamic_features) x = unit(rng);
  for (int i = 0; i < 200; ++i) user.history.push_back(item(rng));
  std::vector<float> u(d.user_out);
  for (float& x : u) x = unit(rng);
  std::vector<int64_t> candidates(n);
  std::vector<float> ctr(n);
  // Variant 0 is the monolithic evaluator; the others run a runtime.
  constexpr int kVariants = 5;
  ModelRuntime* runtimes[kVariants] = {nullptr, f.computed.get(), f.table.get(),
                                       f.table8.get(), f.computed8.get()};
  std::unique_ptr<ModelRuntime::QueryBuffers> buffers[kVariants];
  for (int v = 1; v < kVariants; ++v) {
    buffers[v] = runtimes[v]->TakeBuffers();
    std::copy(u.begin(), u.end(), buffers[v]->u.data());
  }
  // One query of `variant` over `candidates`; adds its table rows.
  int64_t from_table[kVariants] = {};
  auto run = [&](int variant) -> absl::Status {
    if (variant == 0) {
      return f.computed->monolithic()->Score(user, candidates, ctr.data());
    }
    ModelRuntime& rt = *runtimes[variant];
    ModelRuntime::QueryBuffers* b = buffers[variant].get();
    ModelRuntime::ItemSideCounts counts;
    RETURN_IF_ERROR(rt.ComputeItemSide(
        candidates.data(), n, LookupStrategy::kBatch, false, b, &counts));
    from_table[variant] += counts.table_rows;
    return rt.Combine(n, UserStrategy::kLoad, b);
  };
  // Untimed first: the first queries page in the tables a fresh process
  // has not read yet (seconds at rows x 0.25) and build kernels, which a
  // run of few iterations would otherwise report as its median.
  for (int warm = 0; warm < 3; ++warm) {
    for (int64_t& c : candidates) c = item(rng);
    for (int v = 0; v < kVariants; ++v) {
      if (!run(v).ok()) {
        state.SkipWithError("scoring failed");
        return;
      }
    }
  }
  std::fill(std::begin(from_table), std::end(from_table), 0);
  std::vector<double> times[kVariants];
  int64_t it = 0;
  for (auto _ : state) {
    for (int64_t& c : candidates) c = item(rng);
    for (int k = 0; k < kVariants; ++k) {
      const int variant = static_cast<int>((k + it) % kVariants);
      const auto t0 = Clock::now();
      const absl::Status s = run(variant);
      if (!s.ok()) {
        state.SkipWithError("scoring failed");
        return;
      }
      times[variant].push_back(
          std::chrono::duration<double>(Clock::now() - t0).count());
    }
    ++it;
  }
  const double mono = MedianOf(times[0]), split = MedianOf(times[1]),
               table = MedianOf(times[2]), table8 = MedianOf(times[3]),
               split8 = MedianOf(times[4]);
  const ModelRuntime::ItemTableStatus ts = f.table->item_table_status();
  const ModelRuntime::ItemTableStatus ts8 = f.table8->item_table_status();
  const double queried = static_cast<double>(n) * it;
  state.counters["mono_ms"] = 1e3 * mono;
  state.counters["split_ms"] = 1e3 * split;
  state.counters["split8_ms"] = 1e3 * split8;
  state.counters["split_over_split8"] = split / split8;
  state.counters["table_ms"] = 1e3 * table;
  state.counters["table8_ms"] = 1e3 * table8;
  state.counters["mono_over_split"] = mono / split;
  state.counters["mono_over_table"] = mono / table;
  state.counters["mono_over_table8"] = mono / table8;
  state.counters["table_hit_ratio"] = from_table[2] / queried;
  state.counters["table8_hit_ratio"] = from_table[3] / queried;
  state.counters["table_mib"] = static_cast<double>(ts.bytes) / (1 << 20);
  state.counters["table8_mib"] = static_cast<double>(ts8.bytes) / (1 << 20);
  state.counters["table_first_layer"] =
      ts.plan.form == ItemTableForm::kFirstLayer ? 1 : 0;
  state.counters["table_build_s"] = f.build_s;
  for (int v = 1; v < kVariants; ++v) {
    runtimes[v]->ReturnBuffers(std::move(buffers[v]));
  }
}

// K = 8 queries of n candidates each: their item sides one by one (as
// duet-cloud runs them without --item_batch_max_candidates) and as one pass
// of 8n candidates split back into the queries (the batcher's work), side
// by side in every iteration, alternating which runs first; medians in
// alone_us / batched_us, ratio alone_over_batched. No cache, no item table:
// the computed item side, the work batching shares.
void BM_ItemSideBatched(benchmark::State& state, const std::string& preset) {
  constexpr int kQueries = 8;
  const int n = static_cast<int>(state.range(0));
  Fixture& f = GetFixture(preset, kQueries * n);
  const std::shared_ptr<ModelRuntime> runtime = f.core->runtime();
  std::unique_ptr<ModelRuntime::QueryBuffers> batch = runtime->TakeBuffers();
  std::unique_ptr<ModelRuntime::QueryBuffers> one = runtime->TakeBuffers();
  const LookupStrategy strategy = LookupStrategy::kBatch;
  std::vector<double> alone, batched;
  bool alone_first = true;
  const auto run_alone = [&] {
    for (int q = 0; q < kQueries; ++q) {
      if (!runtime
               ->ComputeItemSide(f.candidates.data() + q * n, n, strategy,
                                 /*use_cache=*/false, one.get(), nullptr)
               .ok()) {
        std::abort();
      }
    }
  };
  const auto run_batched = [&] {
    if (!runtime
             ->ComputeItemSide(f.candidates.data(), kQueries * n, strategy,
                               /*use_cache=*/false, batch.get(), nullptr)
             .ok()) {
      std::abort();
    }
    for (int q = 0; q < kQueries; ++q) {
      runtime->CopyItemSide(*batch, q * n, n, one.get());
    }
  };
  run_alone();  // warm-up: page-ins and kernels for both shapes
  run_batched();
  for (auto _ : state) {
    for (int k = 0; k < 2; ++k) {
      const bool do_alone = (k == 0) == alone_first;
      const auto t0 = Clock::now();
      do_alone ? run_alone() : run_batched();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      (do_alone ? alone : batched).push_back(s);
    }
    alone_first = !alone_first;
  }
  runtime->ReturnBuffers(std::move(batch));
  runtime->ReturnBuffers(std::move(one));
  const double a = MedianOf(alone), b = MedianOf(batched);
  state.counters["alone_us"] = 1e6 * a;
  state.counters["batched_us"] = 1e6 * b;
  state.counters["alone_over_batched"] = a / b;
}

void Register() {
  for (const char* preset : {"rm1", "rm2", "rm3", "rm4", "rm5"}) {
    benchmark::RegisterBenchmark(
        (std::string("item_side_batched/") + preset).c_str(),
        [preset = std::string(preset)](benchmark::State& st) {
          BM_ItemSideBatched(st, preset);
        })
        ->Arg(8)
        ->Arg(16)
        ->Arg(32)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  for (const char* preset : {"rm1", "rm2", "rm3", "rm4", "rm5"}) {
    benchmark::RegisterBenchmark(
        (std::string("split_vs_monolithic/") + preset).c_str(),
        [preset = std::string(preset)](benchmark::State& st) {
          BM_SplitVsMonolithic(st, preset);
        })
        ->Arg(8)
        ->Arg(1024)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (const char* preset : {"rm1", "rm2", "rm3", "rm4", "rm5"}) {
    for (auto split :
         {common::PresetSplit::kPersonalized, common::PresetSplit::kPaper}) {
      benchmark::RegisterBenchmark(
          (std::string("combined_top/") + preset + "/" +
           std::string(common::PresetSplitName(split)))
              .c_str(),
          [preset = std::string(preset), split](benchmark::State& st) {
            BM_CombinedTop(st, preset, split);
          })
          ->RangeMultiplier(2)
          ->Range(1, 1024)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  }
  for (const char* preset : {"rm2", "rm3"}) {
    for (auto [name, s] : {std::pair{"batch", LookupStrategy::kBatch},
                           std::pair{"table", LookupStrategy::kTable}}) {
      benchmark::RegisterBenchmark(
          (std::string("item_model/") + preset + "/" + name).c_str(),
          [preset = std::string(preset), s = s](benchmark::State& st) {
            BM_ItemModelVsRoofline(st, preset, s);
          })
          ->Arg(64)
          ->Arg(1024)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

}  // namespace
}  // namespace duet::cloud

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  duet::cloud::Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
