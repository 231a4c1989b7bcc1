// duet-model: generate, inspect, verify and compare Duet model directories.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/kernels/top_k.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"
#include "common/model/reference_model.h"
#include "tools/cli_args.h"

namespace duet::tools {
namespace {

using common::ModelDims;
using duet::v1::ModelConfig;

constexpr char kUsage[] =
    R"(duet-model: create and check Duet model directories.

Usage:
  duet-model gen --preset P [--rows-scale F] [--seed S] [--version V] --out DIR
      Writes DIR/model.pbtxt, edge.safetensors, cloud.safetensors and
      user_tables.safetensors with deterministic weights. Presets: %s.
      --rows-scale F (0 < F <= 1, default 1) shrinks every table's rows.
      --calibration-samples K  synthetic users for int8 calibration (512).
  duet-model inspect DIR [--json]
      Parameter counts and bytes per part, dimensions, scratchpad bytes.
  duet-model verify DIR
      Checks checksums, sizes, dtypes and shapes against model.pbtxt.
      Exits 1 with a precise message on the first mismatch.
  duet-model compare DIR [--queries Q] [--candidates N] [--seed S]
                   [--int8-arithmetic A]
      Scores random users in-process with the monolithic reference and the
      split model (fp32 and int8 user top MLP) and reports the differences
      and the latency ratio. Exits 1 if fp32 split and monolithic differ by
      more than 1e-5 in any CTR. --int8-arithmetic: auto (what this CPU runs
      exactly: full with VNNI, else reduced-weights), full, reduced-weights
      or reduced-activations.
  duet-model --help | -h | help | COMMAND --help
      This text, on stdout.

Exit status: 0 on success, 1 on a failed check or error, 2 on bad usage (an
unknown command or flag, a malformed value, a missing or extra argument).
Logs and errors go to stderr; results to stdout.
)";

void PrintUsage(std::FILE* out) {
  std::fprintf(out, kUsage, absl::StrJoin(common::PresetNames(), ", ").c_str());
}

int Fail(const absl::Status& status) {
  std::cerr << "duet-model: " << status << std::endl;
  return 1;
}

// The same two lines as the absl-flag binaries (common/cli/flags.h).
int Usage(const std::string& message) {
  std::cerr << "ERROR: " << message << "\nTry 'duet-model --help' for usage."
            << std::endl;
  return 2;
}

int Gen(const CliArgs& args) {
  if (!args.Has("preset") || !args.Has("out")) {
    return Usage("gen needs --preset and --out");
  }
  auto scale = args.GetDouble("rows-scale", 1.0);
  auto seed = args.GetUint("seed", 1);
  auto version = args.GetUint("version", 1);
  auto samples = args.GetInt("calibration-samples", 512);
  for (const absl::Status& s :
       {scale.status(), seed.status(), version.status(), samples.status()}) {
    if (!s.ok()) return Usage(std::string(s.message()));
  }
  auto config = common::PresetConfig(args.Get("preset"), *scale);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  common::GenerateOptions options;
  options.out_dir = args.Get("out");
  options.seed = *seed;
  options.version = static_cast<uint32_t>(*version);
  options.calibration_samples = static_cast<int>(*samples);
  const auto start = std::chrono::steady_clock::now();
  auto result = common::GenerateModel(*config, options, &std::cerr);
  if (!result.ok()) return Fail(result.status());
  std::printf(
      "generated %s in %s (%.1f s)\n", common::ModelLabel(*result).c_str(),
      options.out_dir.c_str(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return 0;
}

struct PartStats {
  int64_t params = 0;
  int64_t bytes = 0;
};

PartStats Stats(const ModelConfig& c, const std::string& file,
                const std::string& prefix) {
  PartStats s;
  for (const auto& t : common::ExpectedTensors(c, file)) {
    if (t.name.rfind(prefix, 0) != 0) continue;
    int64_t n = 1;
    for (int64_t dim : t.shape) n *= dim;
    s.params += n;
    s.bytes += n * (t.dtype == "I8" ? 1 : 4);
  }
  return s;
}

int Inspect(const CliArgs& args) {
  const std::string dir = args.positional()[0];
  auto config = common::ReadConfig(dir + "/" + common::kConfigFile);
  if (!config.ok()) return Fail(config.status());
  const ModelConfig& c = *config;
  const ModelDims d = common::ComputeDims(c);
  struct Part {
    const char* name;
    const char* file;
    const char* prefix;
  };
  const Part parts[] = {
      {"static_bottom_mlp", common::kEdgeFile, "static_bottom."},
      {"dynamic_bottom_mlp", common::kEdgeFile, "dynamic_bottom."},
      {"user_top_mlp_fp32", common::kEdgeFile, "user_top."},
      {"user_top_mlp_int8", common::kEdgeFile, "user_top_int8."},
      {"item_tables", common::kCloudFile, "item_tables."},
      {"item_top_mlp", common::kCloudFile, "item_top."},
      {"combined_top_mlp", common::kCloudFile, "combined_top."},
      {"user_tables", common::kUserTablesFile, "user_tables."},
  };
  const int64_t scratchpad = common::ScratchpadBytes(c);
  // Upstream payload of one query: int8 values of u plus a fixed header.
  const int64_t user_vector_bytes = d.user_out;
  if (args.Has("json")) {
    std::string json = absl::StrFormat(
        "{\"name\":\"%s\",\"version\":%d,\"signature\":\"%s\","
        "\"embedding_dim\":%d,\"user_tables\":%d,\"item_tables\":%d,"
        "\"scratchpad_bytes\":%d,\"user_vector_values\":%d,"
        "\"dims\":{\"static_in\":%d,\"static_out\":%d,\"dynamic_in\":%d,"
        "\"dynamic_out\":%d,\"user_top_in\":%d,\"user_out\":%d,"
        "\"item_top_in\":%d,\"item_out\":%d,\"combined_in\":%d},\"parts\":{",
        c.name(), c.version(), c.signature(), c.embedding_dim(),
        c.user_tables_size(), c.item_tables_size(), scratchpad,
        user_vector_bytes, d.static_in, d.static_out, d.dynamic_in,
        d.dynamic_out, d.user_top_in, d.user_out, d.item_top_in, d.item_out,
        d.combined_in);
    bool first = true;
    for (const Part& p : parts) {
      const PartStats s = Stats(c, p.file, p.prefix);
      absl::StrAppendFormat(&json, "%s\"%s\":{\"params\":%d,\"bytes\":%d}",
                            first ? "" : ",", p.name, s.params, s.bytes);
      first = false;
    }
    json += "},\"files\":[";
    first = true;
    for (const auto& f : c.files()) {
      absl::StrAppendFormat(
          &json, "%s{\"name\":\"%s\",\"bytes\":%d,\"sha256\":\"%s\"}",
          first ? "" : ",", f.name(), f.size_bytes(), f.sha256());
      first = false;
    }
    json += "]}";
    std::printf("%s\n", json.c_str());
    return 0;
  }
  std::printf("model       %s\n", common::ModelLabel(c).c_str());
  std::printf("description %s\n", c.description().c_str());
  std::printf("embedding   d=%d, %d user tables, %d item tables, %lld items\n",
              c.embedding_dim(), c.user_tables_size(), c.item_tables_size(),
              static_cast<long long>(c.catalog().num_items()));
  std::printf(
      "dims        s %d -> z_s %d | c %d -> z_c %d | user top %d -> u %d"
      " | item top %d -> v %d | combined %d -> 1\n",
      d.static_in, d.static_out, d.dynamic_in, d.dynamic_out, d.user_top_in,
      d.user_out, d.item_top_in, d.item_out, d.combined_in);
  std::printf("\n%-20s %-24s %16s %16s\n", "part", "file", "parameters",
              "bytes");
  for (const Part& p : parts) {
    const PartStats s = Stats(c, p.file, p.prefix);
    std::printf("%-20s %-24s %16lld %16lld\n", p.name, p.file,
                static_cast<long long>(s.params),
                static_cast<long long>(s.bytes));
  }
  std::printf("\nscratchpad  %lld bytes per user (fp32 rows: ",
              static_cast<long long>(scratchpad));
  // Runs of equal history lengths print as "24 x 120".
  std::vector<std::string> hist;
  for (int i = 0; i < c.user_tables_size();) {
    int j = i;
    while (j < c.user_tables_size() && c.user_tables(j).history_length() ==
                                           c.user_tables(i).history_length()) {
      ++j;
    }
    hist.push_back(j - i > 1 ? absl::StrCat(j - i, " x ",
                                            c.user_tables(i).history_length())
                             : absl::StrCat(c.user_tables(i).history_length()));
    i = j;
  }
  std::printf("history rows %s, d=%d, 4 B each)\n",
              absl::StrJoin(hist, " + ").c_str(), c.embedding_dim());
  std::printf("user vector %d values (%d bytes as int8)\n", d.user_out,
              d.user_out);
  for (const auto& f : c.files()) {
    std::printf("file        %-24s %14lld bytes  sha256 %s\n", f.name().c_str(),
                static_cast<long long>(f.size_bytes()), f.sha256().c_str());
  }
  return 0;
}

int Verify(const CliArgs& args) {
  const std::string dir = args.positional()[0];
  if (absl::Status s = common::VerifyModelDir(dir); !s.ok()) return Fail(s);
  std::printf(
      "%s: OK (checksums, sizes, dtypes and shapes match model.pbtxt)\n",
      dir.c_str());
  return 0;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
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
  common::LoadOptions options;
  options.parts = {true, true, true};
  const std::string arithmetic = args.Get("int8-arithmetic", "auto");
  if (arithmetic != "auto") {
    auto parsed = common::ParseInt8Arithmetic(arithmetic);
    if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
    options.int8_arithmetic = *parsed;
  }
  auto model = common::Model::Load(args.positional()[0], options);
  if (!model.ok()) return Fail(model.status());
  const common::Model& m = **model;
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
    if (s.ok()) {
      s = split.UserVector(user.static_features.data(),
                           user.dynamic_features.data(), pooled.data(), true,
                           u8.data());
    }
    if (s.ok()) s = split.ScoreItems(u8.data(), cands, ctr_int8.data());
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
  std::printf(
      "int8 user top vs fp32:    mean |dCTR| = %.3g, top-10 overlap = "
      "%.1f %% (%s arithmetic; %s)\n",
      mean_int8, 100.0 * overlap / *queries,
      common::Int8ArithmeticName(m.int8_arithmetic()),
      common::Int8Kernels().Describe().c_str());
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

// A subcommand: its flags and how many positional arguments (DIR) it takes.
struct Command {
  const char* name;
  int (*run)(const CliArgs&);
  std::vector<std::string> value_flags;
  std::vector<std::string> bool_flags;
  size_t positional;
};

const Command* FindCommand(const std::string& name) {
  static const auto* const commands = new std::vector<Command>{
      {"gen",
       Gen,
       {"preset", "rows-scale", "seed", "version", "out",
        "calibration-samples"},
       {"help"},
       0},
      {"inspect", Inspect, {}, {"json", "help"}, 1},
      {"verify", Verify, {}, {"help"}, 1},
      {"compare",
       Compare,
       {"queries", "candidates", "seed", "int8-arithmetic"},
       {"help"},
       1},
  };
  for (const Command& c : *commands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

int Main(std::vector<std::string> args) {
  if (args.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string name = args[0];
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(stdout);
    return 0;
  }
  const Command* command = FindCommand(name);
  if (command == nullptr) {
    return Usage(name[0] == '-'
                     ? absl::StrCat("expected a command (gen, inspect, verify "
                                    "or compare) before any flag, got ",
                                    name)
                     : absl::StrCat("unknown command '", name, "'"));
  }
  args.erase(args.begin());
  auto parsed = CliArgs::Parse(args, command->value_flags, command->bool_flags);
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
  if (parsed->Has("help")) {
    PrintUsage(stdout);
    return 0;
  }
  const std::vector<std::string>& positional = parsed->positional();
  if (positional.size() > command->positional) {
    return Usage(absl::StrCat("unexpected argument '",
                              positional[command->positional], "'"));
  }
  if (positional.size() < command->positional) {
    return Usage(absl::StrCat(name, " needs DIR"));
  }
  return command->run(*parsed);
}

}  // namespace
}  // namespace duet::tools

int main(int argc, char** argv) {
  return duet::tools::Main(std::vector<std::string>(argv + 1, argv + argc));
}
