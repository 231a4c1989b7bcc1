// duet-model compare and score: the model evaluated in-process by the
// reference evaluators (common/model/reference_model.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/format/safetensors.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/kernels/top_k.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/model/reference_model.h"
#include "tools/model_commands.h"

namespace duet::tools {
namespace {

using common::ModelDims;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Loads DIR (the first positional argument) with every part, the int8 user
// top MLP only if it has one (an fp32 model, trained and not yet quantized,
// is evaluated in fp32 only), in --int8-arithmetic. 0, or the exit status.
int LoadWholeModel(const CliArgs& args, std::unique_ptr<common::Model>* out) {
  const std::string dir = args.positional()[0];
  auto config = common::ReadConfig(dir + "/" + common::kConfigFile);
  if (!config.ok()) return Fail(config.status());
  common::LoadOptions options;
  options.parts = {true, true, true};
  options.parts.user_top_int8 = config->has_user_top_int8();
  const std::string arithmetic = args.Get("int8-arithmetic", "auto");
  if (arithmetic != "auto") {
    auto parsed = common::ParseInt8Arithmetic(arithmetic);
    if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
    options.int8_arithmetic = *parsed;
  }
  auto model = common::Model::Load(dir, options);
  if (!model.ok()) return Fail(model.status());
  *out = std::move(*model);
  return 0;
}

// The recorded queries of a `score` input file (format in the usage text).
struct Queries {
  std::unique_ptr<common::SafetensorsFile> file;
  int64_t q = 0, n = 0, h = 0;
  const float* static_features = nullptr;
  const float* context = nullptr;
  const int64_t* history = nullptr;
  const int64_t* candidates = nullptr;
};

absl::StatusOr<Queries> ReadQueries(const std::string& path,
                                    const common::Model& m) {
  Queries r;
  ASSIGN_OR_RETURN(r.file, common::SafetensorsFile::Open(path));
  const common::SafetensorsFile& f = *r.file;
  auto shape = [&](const char* name,
                   int dims) -> absl::StatusOr<const common::TensorInfo*> {
    const common::TensorInfo* t = f.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has no tensor '", name, "'"));
    }
    if (static_cast<int>(t->shape.size()) != dims) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", name, "' must have ", dims, " dimensions"));
    }
    return t;
  };
  ASSIGN_OR_RETURN(const common::TensorInfo* cand, shape("candidates", 2));
  ASSIGN_OR_RETURN(const common::TensorInfo* hist, shape("history", 2));
  r.q = cand->shape[0];
  r.n = cand->shape[1];
  r.h = hist->shape[1];
  ASSIGN_OR_RETURN(const void* c,
                   f.Get("candidates", common::DType::kI64, {r.q, r.n}));
  ASSIGN_OR_RETURN(const void* hi,
                   f.Get("history", common::DType::kI64, {r.q, r.h}));
  r.candidates = static_cast<const int64_t*>(c);
  r.history = static_cast<const int64_t*>(hi);
  const ModelDims& d = m.dims();
  if (d.static_in > 0) {
    ASSIGN_OR_RETURN(const void* s,
                     f.Get("static", common::DType::kF32, {r.q, d.static_in}));
    r.static_features = static_cast<const float*>(s);
  }
  if (d.dynamic_in > 0) {
    ASSIGN_OR_RETURN(const void* s, f.Get("context", common::DType::kF32,
                                          {r.q, d.dynamic_in}));
    r.context = static_cast<const float*>(s);
  }
  return r;
}

absl::Status ScoreQueries(const common::Model& m, const Queries& in,
                          const std::string& out_path) {
  const ModelDims& d = m.dims();
  const common::MonolithicModel mono(&m);
  const common::SplitModel split(&m);
  // What duet-cloud --item_embeddings int8 computes (fp32 user side).
  const common::Int8ItemTables int8_tables(m);
  const common::SplitModel split_int8_items(&m, &int8_tables.tables());
  const bool int8 = m.has_user_top_int8();
  const size_t total = static_cast<size_t>(in.q) * in.n;
  std::vector<float> mono_ctr(total), fp32_ctr(total), int8_ctr(total),
      items8_ctr(total);
  std::vector<float> pooled(d.pooled), u(d.user_out);
  for (int64_t q = 0; q < in.q; ++q) {
    common::UserInputs user;
    if (in.static_features != nullptr) {
      user.static_features.assign(in.static_features + q * d.static_in,
                                  in.static_features + (q + 1) * d.static_in);
    }
    if (in.context != nullptr) {
      user.dynamic_features.assign(in.context + q * d.dynamic_in,
                                   in.context + (q + 1) * d.dynamic_in);
    }
    user.history.assign(in.history + q * in.h, in.history + (q + 1) * in.h);
    const absl::Span<const int64_t> cands(in.candidates + q * in.n,
                                          static_cast<size_t>(in.n));
    RETURN_IF_ERROR(common::ValidateUserInputs(m, user));
    for (const int64_t item : cands) {
      if (!m.catalog().Contains(item)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "candidates[%d] holds item %d; valid item ids are [0, %d)", q, item,
            m.catalog().num_items()));
      }
    }
    const size_t at = static_cast<size_t>(q) * in.n;
    RETURN_IF_ERROR(mono.Score(user, cands, mono_ctr.data() + at));
    common::PoolHistory(m, user.history, pooled.data());
    for (const bool quantized : {false, true}) {
      if (quantized && !int8) break;
      RETURN_IF_ERROR(split.UserVector(user.static_features.data(),
                                       user.dynamic_features.data(),
                                       pooled.data(), quantized, u.data()));
      RETURN_IF_ERROR(split.ScoreItems(
          u.data(), cands, (quantized ? int8_ctr : fp32_ctr).data() + at));
      if (!quantized) {
        RETURN_IF_ERROR(split_int8_items.ScoreItems(u.data(), cands,
                                                    items8_ctr.data() + at));
      }
    }
  }
  std::vector<common::TensorSpec> specs = {
      {"monolithic_fp32", common::DType::kF32, {in.q, in.n}},
      {"split_fp32", common::DType::kF32, {in.q, in.n}},
      {"split_int8_items", common::DType::kF32, {in.q, in.n}}};
  if (int8) specs.push_back({"split_int8", common::DType::kF32, {in.q, in.n}});
  ASSIGN_OR_RETURN(
      auto writer,
      common::SafetensorsWriter::Create(
          out_path, specs,
          {{"model", common::ModelLabel(m.config())},
           {"int8_arithmetic",
            int8 ? common::Int8ArithmeticName(m.int8_arithmetic()) : "none"}}));
  for (const auto* v : {&mono_ctr, &fp32_ctr, &items8_ctr, &int8_ctr}) {
    if (v == &int8_ctr && !int8) break;
    RETURN_IF_ERROR(writer->Append(v->data(), v->size() * sizeof(float)));
  }
  return writer->Finish();
}

}  // namespace

int Score(const CliArgs& args) {
  if (!args.Has("queries") || !args.Has("out")) {
    return Usage("score needs --queries and --out");
  }
  std::unique_ptr<common::Model> loaded;
  if (const int code = LoadWholeModel(args, &loaded); code != 0) return code;
  const common::Model& m = *loaded;
  auto queries = ReadQueries(args.Get("queries"), m);
  if (!queries.ok()) return Fail(queries.status());
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = ScoreQueries(m, *queries, args.Get("out")); !s.ok()) {
    return Fail(s);
  }
  std::printf(
      "scored %lld queries x %lld candidates of %s in %.2f s into %s\n",
      static_cast<long long>(queries->q), static_cast<long long>(queries->n),
      common::ModelLabel(m.config()).c_str(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count(),
      args.Get("out").c_str());
  return 0;
}

int Compare(const CliArgs& args) {
  auto queries = args.GetInt("queries", 20);
  auto n_cand = args.GetInt("candidates", 256);
  auto seed = args.GetUint("seed", 7);
  for (const absl::Status& s :
       {queries.status(), n_cand.status(), seed.status()}) {
    if (!s.ok()) return Usage(std::string(s.message()));
  }
  if (*queries < 1 || *n_cand < 1) {
    return Usage("--queries and --candidates must be positive");
  }
  std::unique_ptr<common::Model> loaded;
  if (const int code = LoadWholeModel(args, &loaded); code != 0) return code;
  const common::Model& m = *loaded;
  const ModelDims& d = m.dims();
  const common::MonolithicModel mono(&m);
  const common::SplitModel split(&m);

  std::mt19937_64 rng(*seed);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> item(0, m.catalog().num_items() - 1);
  int max_history = 0;
  for (const auto& t : m.config().user_tables()) {
    max_history = std::max(max_history, t.history_length());
  }
  if (*n_cand > m.catalog().num_items()) {
    return Usage(absl::StrCat("--candidates ", *n_cand, " exceeds the ",
                              m.catalog().num_items(),
                              " items of the catalog"));
  }
  const int n = static_cast<int>(*n_cand);
  std::vector<int64_t> cands(n);
  std::vector<float> ctr_mono(n), ctr_fp32(n), ctr_int8(n);
  std::vector<float> pooled(d.pooled), u(d.user_out), u8(d.user_out);
  double max_fp32 = 0, sum_int8 = 0, overlap = 0;
  std::vector<double> t_mono, t_split;
  using Clock = std::chrono::steady_clock;
  for (int q = 0; q < *queries; ++q) {
    common::UserInputs user;
    for (int i = 0; i < d.static_in; ++i)
      user.static_features.push_back(unit(rng));
    for (int i = 0; i < d.dynamic_in; ++i)
      user.dynamic_features.push_back(unit(rng));
    for (int i = 0; i < max_history; ++i) user.history.push_back(item(rng));
    // A ranking query's candidates are distinct items.
    absl::flat_hash_set<int64_t> drawn;
    for (auto& c : cands) {
      do {
        c = item(rng);
      } while (!drawn.insert(c).second);
    }

    auto t0 = Clock::now();
    absl::Status s = mono.Score(user, cands, ctr_mono.data());
    auto t1 = Clock::now();
    if (s.ok()) {
      common::PoolHistory(m, user.history, pooled.data());
      s = split.UserVector(user.static_features.data(),
                           user.dynamic_features.data(), pooled.data(), false,
                           u.data());
    }
    if (s.ok()) s = split.ScoreItems(u.data(), cands, ctr_fp32.data());
    auto t2 = Clock::now();
    if (s.ok() && m.has_user_top_int8()) {
      s = split.UserVector(user.static_features.data(),
                           user.dynamic_features.data(), pooled.data(), true,
                           u8.data());
      if (s.ok()) s = split.ScoreItems(u8.data(), cands, ctr_int8.data());
    } else {
      ctr_int8 = ctr_fp32;
    }
    if (!s.ok()) return Fail(s);
    if (q > 0) {  // the first query pays for primitive creation
      t_mono.push_back(std::chrono::duration<double>(t1 - t0).count());
      t_split.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    for (int j = 0; j < n; ++j) {
      max_fp32 =
          std::max<double>(max_fp32, std::fabs(ctr_mono[j] - ctr_fp32[j]));
      sum_int8 += std::fabs(ctr_int8[j] - ctr_fp32[j]);
    }
    const int k = std::min(10, n);
    const auto top32 = common::TopK(cands.data(), ctr_fp32.data(), n, k);
    const auto top8 = common::TopK(cands.data(), ctr_int8.data(), n, k);
    int common_items = 0;
    for (const auto& a : top32) {
      for (const auto& b : top8) common_items += a.item_id == b.item_id;
    }
    overlap += static_cast<double>(common_items) / k;
  }
  const double mean_int8 = sum_int8 / (static_cast<double>(*queries) * n);
  std::printf("model %s, %lld queries x %d candidates\n",
              common::ModelLabel(m.config()).c_str(),
              static_cast<long long>(*queries), n);
  std::printf("fp32 split vs monolithic: max |dCTR| = %.3g (bound 1e-5)\n",
              max_fp32);
  if (m.has_user_top_int8()) {
    std::printf(
        "int8 user top vs fp32:    mean |dCTR| = %.3g, top-10 overlap = "
        "%.1f %% (%s arithmetic; %s)\n",
        mean_int8, 100.0 * overlap / *queries,
        common::Int8ArithmeticName(m.int8_arithmetic()),
        common::Int8Kernels().Describe().c_str());
  } else {
    std::printf(
        "int8 user top:            none (an fp32 model; add it with "
        "duet-model quantize)\n");
  }
  if (!t_mono.empty()) {
    std::printf(
        "in-process latency (median of %zu, one thread): monolithic "
        "%.3f ms, split %.3f ms, ratio %.1fx\n",
        t_mono.size(), 1e3 * Median(t_mono), 1e3 * Median(t_split),
        Median(t_mono) / Median(t_split));
  }
  if (!(max_fp32 <= 1e-5)) {
    std::cerr << "duet-model: fp32 split and monolithic CTRs differ by "
              << max_fp32 << " > 1e-5" << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace duet::tools
