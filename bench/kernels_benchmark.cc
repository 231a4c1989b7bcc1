// Kernel microbenchmarks: embedding gather + SUM pooling (fp32 and row-wise
// int8, production vs scalar reference) on a cache-resident and a
// DRAM-resident table, a "limit probe" per table, and the oneDNN MLPs of the
// rm2/rm4 presets.
//
// The probe is the simplest prefetching random-row gather loop over the same
// table and id stream; every gather reports `of_probe` = its rows/s as a
// fraction of the probe's (probes are registered, hence run, first).
// DRAM tables (2 GiB fp32 plus its int8 copy) are allocated on first use;
// skip them with --benchmark_filter=-dram.
#include <immintrin.h>
#include <sys/mman.h>
#include <time.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/kernels/embedding_bag.h"
#include "common/kernels/mlp.h"
#include "common/kernels/mlp_reference.h"
#include "common/model/mlp_quantizer.h"

namespace duet::common {
namespace {

using Format = EmbeddingTable::Format;

enum class Residency { kCache, kDram };
enum class Impl { kProd, kRef };

// Cache-resident: 4K rows (512 KiB at dim 32 fp32, 1 MiB at 64: in L2).
constexpr int64_t kCacheRows = 4096;
// DRAM-resident: 2 GiB of fp32 rows, larger than this VM's reported L3
// (480 MiB) by 4x; the int8 copy of the same rows is ~600 MiB.
constexpr size_t kDramFp32Bytes = size_t{2} << 30;
// Ids are drawn from a pool much larger than one iteration's window, so
// consecutive iterations touch fresh rows instead of re-hitting cache.
constexpr int64_t kIdPoolSize = int64_t{8} << 20;
constexpr int kProbePrefetch = 16;
constexpr int64_t kProbeLookups = 64 * 80;

// Anonymous mapping, huge pages advised, released at exit by the OS.
uint8_t* MapBytes(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  madvise(p, bytes, MADV_HUGEPAGE);
  return static_cast<uint8_t*>(p);
}

int64_t Rows(Residency r, Format f, int dim) {
  (void)f;  // int8 tables hold the same rows as the fp32 one
  return r == Residency::kCache
             ? kCacheRows
             : static_cast<int64_t>(kDramFp32Bytes / (size_t{4} * dim));
}

// Tables are built once per (residency, format, dim) and kept for the run.
// Fill is a cheap byte pattern (0x3c3c3c3c is the float 0.0115; as int8 rows
// the scale and bias are that float too): generation time must stay small.
EmbeddingTable GetTable(Residency r, Format f, int dim) {
  static std::map<std::tuple<Residency, Format, int>, EmbeddingTable> tables;
  static std::map<size_t, uint8_t*> dram_fp32;  // shared by both dims
  auto it = tables.find({r, f, dim});
  if (it != tables.end()) return it->second;
  const int64_t rows = Rows(r, f, dim);
  const size_t stride = f == Format::kFp32 ? size_t{4} * dim : dim + size_t{8};
  const size_t bytes = rows * stride;
  uint8_t* data = nullptr;
  if (r == Residency::kDram && f == Format::kFp32) {
    uint8_t*& shared = dram_fp32[bytes];
    if (shared == nullptr) {
      shared = MapBytes(bytes);
      if (shared != nullptr) std::memset(shared, 0x3c, bytes);
    }
    data = shared;
  } else {
    data = MapBytes(bytes);
    if (data != nullptr) std::memset(data, 0x3c, bytes);
  }
  const EmbeddingTable t =
      f == Format::kFp32
          ? EmbeddingTable::Fp32(reinterpret_cast<float*>(data), rows, dim)
          : EmbeddingTable::Int8Rowwise(data, rows, dim);
  if (data != nullptr) tables[{r, f, dim}] = t;
  return t;
}

const std::vector<int64_t>& IdPool(int64_t rows) {
  static std::map<int64_t, std::vector<int64_t>> pools;
  std::vector<int64_t>& pool = pools[rows];
  if (pool.empty()) {
    pool.resize(kIdPoolSize);
    uint64_t s = 0x9E3779B97F4A7C15ull * rows;
    for (int64_t& id : pool) {  // xorshift64*: fast, uniform enough
      s ^= s >> 12;
      s ^= s << 25;
      s ^= s >> 27;
      id = static_cast<int64_t>((s * 0x2545F4914F6CDD1Dull) >> 11) % rows;
    }
  }
  return pool;
}

// Slides a window of `n` ids through the pool, one step per iteration.
class IdWindow {
 public:
  IdWindow(int64_t rows, int64_t n) : pool_(IdPool(rows)), n_(n) {}
  const int64_t* Next() {
    if (pos_ + n_ > static_cast<int64_t>(pool_.size())) pos_ = 0;
    const int64_t* ids = pool_.data() + pos_;
    pos_ += n_;
    return ids;
  }

 private:
  const std::vector<int64_t>& pool_;
  const int64_t n_;
  int64_t pos_ = 0;
};

std::string Name(Format f) { return f == Format::kFp32 ? "fp32" : "int8"; }
std::string Name(Residency r) {
  return r == Residency::kCache ? "cache" : "dram";
}

// Probe ns/row per (residency, format, dim), read by the gather benchmarks.
std::map<std::tuple<Residency, Format, int>, double>& ProbeNsPerRow() {
  static std::map<std::tuple<Residency, Format, int>, double> m;
  return m;
}

// "per_row" is seconds per row (printed with an SI prefix, e.g. 2.9ns).
void SetRowCounters(benchmark::State& state, int64_t rows_per_iter) {
  state.counters["rows/s"] = benchmark::Counter(
      rows_per_iter, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["per_row"] = benchmark::Counter(
      rows_per_iter, benchmark::Counter::kIsIterationInvariantRate |
                         benchmark::Counter::kInvert);
}

// This thread's CPU time: the probe ratio should not depend on whether the
// shared machine preempted us during one of the two runs.
double ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

// --- Limit probe -----------------------------------------------------------

template <int kDim>
float ProbeFp32(const uint8_t* base, const int64_t* ids, int64_t n) {
  constexpr size_t kRow = kDim * 4;
  __m256 acc[kDim / 8];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; ++k) {
    if (k + kProbePrefetch < n) {
      const uint8_t* p = base + ids[k + kProbePrefetch] * kRow;
      for (size_t off = 0; off < kRow; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
      }
    }
    const float* r = reinterpret_cast<const float*>(base + ids[k] * kRow);
    for (int j = 0; j < kDim / 8; ++j) {
      acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(r + 8 * j));
    }
  }
  for (int j = 1; j < kDim / 8; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  return _mm256_cvtss_f32(acc[0]);
}

template <int kDim>
float ProbeInt8(const uint8_t* base, const int64_t* ids, int64_t n) {
  constexpr size_t kRow = kDim + 8;
  __m256 acc[kDim / 8];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; ++k) {
    if (k + kProbePrefetch < n) {
      const uint8_t* p = base + ids[k + kProbePrefetch] * kRow;
      for (size_t off = 0; off < kRow; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
      }
      _mm_prefetch(reinterpret_cast<const char*>(p + kRow - 1), _MM_HINT_T0);
    }
    const uint8_t* r = base + ids[k] * kRow;
    float scale;
    std::memcpy(&scale, r + kDim, 4);
    const __m256 s = _mm256_set1_ps(scale);
    for (int j = 0; j < kDim / 8; ++j) {
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(r + 8 * j))));
      acc[j] = _mm256_fmadd_ps(s, v, acc[j]);
    }
  }
  for (int j = 1; j < kDim / 8; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  return _mm256_cvtss_f32(acc[0]);
}

void BM_Probe(benchmark::State& state, Residency r, Format f) {
  const int dim = static_cast<int>(state.range(0));
  const EmbeddingTable t = GetTable(r, f, dim);
  if (t.data == nullptr) {
    state.SkipWithError("table allocation failed");
    return;
  }
  IdWindow window(t.rows, kProbeLookups);
  const auto* base = static_cast<const uint8_t*>(t.data);
  auto probe = f == Format::kFp32
                   ? (dim == 32 ? &ProbeFp32<32> : &ProbeFp32<64>)
                   : (dim == 32 ? &ProbeInt8<32> : &ProbeInt8<64>);
  const double t0 = ThreadCpuNs();
  for (auto _ : state) {
    benchmark::DoNotOptimize(probe(base, window.Next(), kProbeLookups));
  }
  const double ns = ThreadCpuNs() - t0;
  ProbeNsPerRow()[{r, f, dim}] = ns / (state.iterations() * kProbeLookups);
  SetRowCounters(state, kProbeLookups);
}

// --- Gather ----------------------------------------------------------------

void BM_Gather(benchmark::State& state, Residency r, Format f, Impl impl) {
  const int dim = static_cast<int>(state.range(0));
  const int64_t bags = state.range(1);
  const int lookups = static_cast<int>(state.range(2));
  const EmbeddingTable t = GetTable(r, f, dim);
  if (t.data == nullptr) {
    state.SkipWithError("table allocation failed");
    return;
  }
  const int64_t n = bags * lookups;
  IdWindow window(t.rows, n);
  std::vector<int32_t> offsets(bags + 1);
  for (int64_t b = 0; b <= bags; ++b)
    offsets[b] = static_cast<int32_t>(b * lookups);
  std::vector<float> out(bags * dim);
  const double t0 = ThreadCpuNs();
  for (auto _ : state) {
    const int64_t* ids = window.Next();
    if (impl == Impl::kProd) {
      EmbeddingBagSum(t, ids, offsets.data(), bags, out.data(), dim, false);
    } else {
      EmbeddingBagSumRef(t, ids, offsets.data(), bags, out.data(), dim, false);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double ns = ThreadCpuNs() - t0;
  SetRowCounters(state, n);
  auto probe = ProbeNsPerRow().find({r, f, dim});
  if (probe != ProbeNsPerRow().end()) {
    state.counters["of_probe"] =
        probe->second / (ns / (state.iterations() * n));
  }
}

// --- MLPs ------------------------------------------------------------------

struct MlpCase {
  const char* name;
  std::vector<int> widths;
  int64_t m;
};

// User top MLPs run once per query (m = 1); item top MLPs over the N
// candidates (m = 1024, the largest N).
const std::vector<MlpCase>& MlpCases() {
  static const auto* cases = new std::vector<MlpCase>{
      {"rm2_user_top", {1600, 96, 48}, 1},
      {"rm4_user_top", {256, 1920, 768}, 1},
      {"rm2_item_top", {512, 32, 16}, 1024},
      {"rm4_item_top", {96, 640, 256}, 1024},
  };
  return *cases;
}

struct MlpFixture {
  std::vector<std::vector<float>> weights, biases;
  std::vector<LinearLayer> layers;
  Int8MlpParams int8_params;
  std::vector<Int8LinearLayer> int8_layers;
  std::unique_ptr<Fp32Mlp> fp32;
  std::unique_ptr<Int8Mlp> int8;
  std::vector<float> input;
};

const MlpFixture* GetMlp(const MlpCase& c) {
  static std::map<std::string, std::unique_ptr<MlpFixture>> fixtures;
  auto& slot = fixtures[c.name];
  if (slot) return slot.get();
  auto f = std::make_unique<MlpFixture>();
  std::mt19937 rng(42);
  for (size_t l = 0; l + 1 < c.widths.size(); ++l) {
    const int in = c.widths[l], out = c.widths[l + 1];
    std::uniform_real_distribution<float> w(-std::sqrt(6.0f / in),
                                            std::sqrt(6.0f / in));
    f->weights.emplace_back(int64_t{in} * out);
    f->biases.emplace_back(out, 0.01f);
    for (float& v : f->weights.back()) v = w(rng);
  }
  for (size_t l = 0; l + 1 < c.widths.size(); ++l) {
    f->layers.push_back({c.widths[l], c.widths[l + 1], f->weights[l].data(),
                         f->biases[l].data()});
  }
  std::uniform_real_distribution<float> x(-1.0f, 1.0f);
  f->input.resize(c.m * c.widths[0]);
  for (float& v : f->input) v = x(rng);
  const int64_t calib_rows = std::min<int64_t>(c.m, 64);
  // The int8 arithmetic that is exact on this CPU (what the edge runs).
  f->int8_params = QuantizeMlp(f->layers, f->input.data(), calib_rows,
                               Int8Kernels().recommended);
  f->int8_layers = f->int8_params.Views();
  auto fp32 = Fp32Mlp::Create(f->layers, Activation::kRelu);
  auto int8 = Int8Mlp::Create(f->int8_layers, Activation::kRelu,
                              f->int8_params.arithmetic);
  if (!fp32.ok() || !int8.ok()) return nullptr;
  f->fp32 = std::move(*fp32);
  f->int8 = std::move(*int8);
  slot = std::move(f);
  return slot.get();
}

void BM_Mlp(benchmark::State& state, const MlpCase& c, bool int8, Impl impl) {
  const MlpFixture* f = GetMlp(c);
  if (f == nullptr) {
    state.SkipWithError("MLP creation failed");
    return;
  }
  // The scalar references are timed at small m only.
  const int64_t m = impl == Impl::kRef ? std::min<int64_t>(c.m, 8) : c.m;
  std::vector<float> out(m * c.widths.back());
  for (auto _ : state) {
    if (impl == Impl::kRef) {
      if (int8) {
        Int8MlpRef(f->int8_layers, f->int8_params.arithmetic, Activation::kRelu,
                   f->input.data(), m, out.data());
      } else {
        Fp32MlpRef(f->layers, Activation::kRelu, f->input.data(), m,
                   out.data());
      }
    } else {
      const absl::Status s = int8
                                 ? f->int8->Run(f->input.data(), m, out.data())
                                 : f->fp32->Run(f->input.data(), m, out.data());
      if (!s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        break;
      }
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["m"] = m;
  state.counters[int8 ? "GOP/s" : "GFLOP/s"] =
      benchmark::Counter((int8 ? f->int8->Ops(m) : f->fp32->Flops(m)) * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

// --- Registration ----------------------------------------------------------

void RegisterAll() {
  for (Residency r : {Residency::kCache, Residency::kDram}) {
    for (Format f : {Format::kFp32, Format::kInt8Rowwise}) {
      const std::string table = Name(f) + "/" + Name(r);
      benchmark::RegisterBenchmark(("probe/" + table).c_str(), BM_Probe, r, f)
          ->ArgName("dim")
          ->Arg(32)
          ->Arg(64);
      for (Impl impl : {Impl::kProd, Impl::kRef}) {
        benchmark::RegisterBenchmark(
            ("gather/" + table + (impl == Impl::kProd ? "/prod" : "/ref"))
                .c_str(),
            BM_Gather, r, f, impl)
            ->ArgNames({"dim", "bags", "lookups"})
            ->ArgsProduct({{32, 64}, {8, 64, 1024}, {20, 80}});
      }
    }
  }
  for (const MlpCase& c : MlpCases()) {
    for (bool int8 : {false, true}) {
      for (Impl impl : {Impl::kProd, Impl::kRef}) {
        const std::string name =
            absl::StrCat(impl == Impl::kProd ? "mlp/" : "mlp_ref/",
                         int8 ? "int8/" : "fp32/", c.name);
        benchmark::RegisterBenchmark(name.c_str(), BM_Mlp, c, int8, impl);
      }
    }
  }
}

}  // namespace
}  // namespace duet::common

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  duet::common::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
