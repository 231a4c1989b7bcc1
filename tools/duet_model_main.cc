// duet-model: generate, quantize, inspect, verify, compare and score Duet
// model directories.
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
#include "common/model/model_quantizer.h"
#include "common/model/presets.h"
#include "common/model/reference_model.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "tools/cli_args.h"
#include "tools/model_commands.h"

namespace duet::tools {
namespace {

using common::ModelDims;
using duet::v1::ModelConfig;

constexpr char kUsage[] =
    R"(duet-model: create and check Duet model directories.

Usage:
  duet-model gen --preset P [--split S] [--rows-scale F] [--seed S]
                 [--version V] --out DIR
      Writes DIR/model.pbtxt, edge.safetensors, edge_int8.safetensors,
      cloud.safetensors and user_tables.safetensors with deterministic
      weights. Presets: %s.
      --split personalized (default): the combined top MLP keeps a hidden
      layer, so rankings depend on the user; --split paper: the Duet paper's
      split (rm1-rm4: one linear layer combined, one order for every user).
      --rows-scale F (0 < F <= 1, default 1) shrinks every table's rows.
      --calibration-samples K  synthetic users for int8 calibration (512).
  duet-model preset P [--split S] [--rows-scale F] [--json]
      Prints the preset's architecture (a ModelConfig without weights) as
      text format, or as protobuf JSON (what tools/duet-train reads).
  duet-model quantize DIR --calibration FILE
      Post-training static int8 of the fp32 user top MLP of DIR (e.g. a model
      trained with tools/duet-train) on recorded inputs: FILE is a
      safetensors file with F32 user_top_inputs [n, user_top_in]. Writes
      DIR/edge_int8.safetensors (format: proto/duet/v1/model.proto,
      Int8QuantizationInfo) and re-signs DIR/model.pbtxt.
  duet-model inspect DIR [--json]
      Parameter counts and bytes per part, dimensions, split, upstream bytes,
      cloud work per candidate; warns when rankings cannot depend on the user.
  duet-model verify DIR
      Checks checksums, sizes, dtypes and shapes against model.pbtxt and
      recomputes the signature. Exits 1 with a precise message on the first
      mismatch.
  duet-model compare DIR [--queries Q] [--candidates N] [--seed S]
                   [--int8-arithmetic A]
      Scores random users in-process with the monolithic reference and the
      split model (fp32 and int8 user top MLP) and reports the differences
      and the latency ratio. Exits 1 if fp32 split and monolithic differ by
      more than 1e-5 in any CTR. --int8-arithmetic: auto (what this CPU runs
      exactly: full with VNNI, else reduced-weights), full, reduced-weights
      or reduced-activations.
  duet-model score DIR --queries FILE --out FILE [--int8-arithmetic A]
      CTRs of recorded queries with the monolithic reference, the fp32 split,
      the fp32 split over int8 item tables (duet-cloud --item_embeddings
      int8) and (if DIR has one) the int8 user top MLP. FILE (safetensors):
      I64 history [Q, H] (item ids, oldest first), I64 candidates [Q, N], F32
      static [Q, s] and context [Q, c] when the model has those features.
      Writes F32 monolithic_fp32, split_fp32, split_int8_items and
      split_int8 [Q, N] to --out.
  duet-model --help | -h | help | COMMAND --help
      This text, on stdout.

Exit status: 0 on success, 1 on a failed check or error, 2 on bad usage (an
unknown command or flag, a malformed value, a missing or extra argument).
Logs and errors go to stderr; results to stdout.
)";

void PrintUsage(std::FILE* out) {
  std::fprintf(out, kUsage, absl::StrJoin(common::PresetNames(), ", ").c_str());
}

int Gen(const CliArgs& args) {
  if (!args.Has("preset") || !args.Has("out")) {
    return Usage("gen needs --preset and --out");
  }
  auto scale = args.GetDouble("rows-scale", 1.0);
  auto seed = args.GetUint("seed", 1);
  auto version = args.GetUint("version", 1);
  auto samples = args.GetInt("calibration-samples", 512);
  auto split = common::ParsePresetSplit(args.Get("split", "personalized"));
  for (const absl::Status& s : {scale.status(), seed.status(), version.status(),
                                samples.status(), split.status()}) {
    if (!s.ok()) return Usage(std::string(s.message()));
  }
  auto config = common::PresetConfig(args.Get("preset"), *scale, *split);
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

int64_t Macs(int in, const google::protobuf::RepeatedField<int32_t>& widths) {
  int64_t macs = 0;
  for (const auto& [fan_in, fan_out] :
       common::MlpShapes(in, std::vector<int>(widths.begin(), widths.end()))) {
    macs += static_cast<int64_t>(fan_in) * fan_out;
  }
  return macs;
}

// Multiply-accumulates of the MLPs: the edge's per query, the cloud's per
// candidate with W_u u loaded once (memory load) and recomputed per row.
struct Work {
  int64_t edge_per_query = 0;
  int64_t cloud_per_candidate = 0;
  int64_t cloud_per_candidate_recompute = 0;
};

Work MlpWork(const ModelConfig& c, const ModelDims& d) {
  Work w;
  w.edge_per_query = Macs(d.static_in, c.static_bottom_layers()) +
                     Macs(d.dynamic_in, c.dynamic_bottom_layers()) +
                     Macs(d.user_top_in, c.user_top_layers());
  const int64_t combined = Macs(d.combined_in, c.combined_top_layers());
  const int64_t user_part =
      static_cast<int64_t>(d.user_out) * c.combined_top_layers(0);
  const int64_t item_top = Macs(d.item_top_in, c.item_top_layers());
  w.cloud_per_candidate = item_top + combined - user_part;
  w.cloud_per_candidate_recompute = item_top + combined;
  return w;
}

int Inspect(const CliArgs& args) {
  const std::string dir = args.positional()[0];
  auto config = common::ReadConfig(dir + "/" + common::kConfigFile);
  if (!config.ok()) return Fail(config.status());
  const ModelConfig& c = *config;
  const ModelDims d = common::ComputeDims(c);
  struct Part {
    const char* name;
    std::string file;
    const char* prefix;
  };
  const Part parts[] = {
      {"static_bottom_mlp", common::kEdgeFile, "static_bottom."},
      {"dynamic_bottom_mlp", common::kEdgeFile, "dynamic_bottom."},
      {"user_top_mlp_fp32", common::kEdgeFile, "user_top."},
      {"user_top_mlp_int8", common::Int8TensorFile(c), "user_top_int8."},
      {"item_tables", common::kCloudFile, "item_tables."},
      {"item_top_mlp", common::kCloudFile, "item_top."},
      {"combined_top_mlp", common::kCloudFile, "combined_top."},
      {"user_tables", common::kUserTablesFile, "user_tables."},
  };
  const int64_t scratchpad = common::ScratchpadBytes(c);
  // Upstream payload of one query: int8 values of u plus a fixed header.
  const int64_t user_vector_bytes = d.user_out;
  const Work work = MlpWork(c, d);
  if (args.Has("json")) {
    std::string json = absl::StrFormat(
        "{\"name\":\"%s\",\"version\":%d,\"signature\":\"%s\","
        "\"embedding_dim\":%d,\"user_tables\":%d,\"item_tables\":%d,"
        "\"scratchpad_bytes\":%d,\"user_vector_values\":%d,"
        "\"split_depth\":%d,\"combined_top_layers\":%d,"
        "\"ranking_depends_on_user\":%s,\"edge_mlp_macs_per_query\":%d,"
        "\"cloud_mlp_macs_per_candidate\":%d,"
        "\"cloud_mlp_macs_per_candidate_recompute\":%d,"
        "\"dims\":{\"static_in\":%d,\"static_out\":%d,\"dynamic_in\":%d,"
        "\"dynamic_out\":%d,\"user_top_in\":%d,\"user_out\":%d,"
        "\"item_top_in\":%d,\"item_out\":%d,\"combined_in\":%d},\"parts\":{",
        c.name(), c.version(), c.signature(), c.embedding_dim(),
        c.user_tables_size(), c.item_tables_size(), scratchpad,
        user_vector_bytes, common::SplitDepth(c), c.combined_top_layers_size(),
        common::RankingCanDependOnUser(c) ? "true" : "false",
        work.edge_per_query, work.cloud_per_candidate,
        work.cloud_per_candidate_recompute, d.static_in, d.static_out,
        d.dynamic_in, d.dynamic_out, d.user_top_in, d.user_out, d.item_top_in,
        d.item_out, d.combined_in);
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
    std::printf("%-20s %-24s %16lld %16lld\n", p.name,
                p.file.empty() ? "-" : p.file.c_str(),
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
  std::vector<std::string> combined;
  combined.push_back(absl::StrCat(d.combined_in));
  for (int w : c.combined_top_layers()) combined.push_back(absl::StrCat(w));
  std::printf(
      "split       %d top-MLP layer(s) split into towers (user -> %d, item -> "
      "%d); combined top %s\n",
      common::SplitDepth(c), d.user_out, d.item_out,
      absl::StrJoin(combined, " -> ").c_str());
  std::printf(
      "work        edge MLPs %lld MACs per query; cloud MLPs %lld MACs per "
      "candidate (W_u u loaded once; %lld recomputed per candidate)\n",
      static_cast<long long>(work.edge_per_query),
      static_cast<long long>(work.cloud_per_candidate),
      static_cast<long long>(work.cloud_per_candidate_recompute));
  if (common::RankingCanDependOnUser(c)) {
    std::printf(
        "ranking     depends on the user (W_u u and W_v v_j meet before a "
        "ReLU)\n");
  } else {
    std::printf(
        "WARNING     the combined top MLP is one linear layer: CTR_j = "
        "sigmoid(w_u.u + w_v.v_j + b) orders every candidate set the same "
        "for every user (the paper's split). Generate with --split "
        "personalized for rankings that depend on the user.\n");
  }
  if (!c.has_user_top_int8()) {
    std::printf(
        "int8        none: an fp32 model (edges serve it with "
        "--user_precision fp32; add it with duet-model quantize)\n");
  }
  for (const auto& f : c.files()) {
    std::printf("file        %-24s %14lld bytes  sha256 %s\n", f.name().c_str(),
                static_cast<long long>(f.size_bytes()), f.sha256().c_str());
  }
  return 0;
}

int Verify(const CliArgs& args) {
  const std::string dir = args.positional()[0];
  std::string note;
  if (absl::Status s = common::VerifyModelDir(dir, &note); !s.ok()) {
    return Fail(s);
  }
  std::printf(
      "%s: OK (checksums, sizes, dtypes, shapes and signature match "
      "model.pbtxt)\n",
      dir.c_str());
  if (!note.empty()) std::printf("note: %s\n", note.c_str());
  return 0;
}

int Preset(const CliArgs& args) {
  auto scale = args.GetDouble("rows-scale", 1.0);
  if (!scale.ok()) return Usage(std::string(scale.status().message()));
  auto split = common::ParsePresetSplit(args.Get("split", "personalized"));
  if (!split.ok()) return Usage(std::string(split.status().message()));
  auto config = common::PresetConfig(args.positional()[0], *scale, *split);
  if (!config.ok()) return Usage(std::string(config.status().message()));
  std::string text;
  if (args.Has("json")) {
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    options.add_whitespace = true;
    if (!google::protobuf::util::MessageToJsonString(*config, &text, options)
             .ok()) {
      return Fail(absl::InternalError("cannot print the config as JSON"));
    }
  } else if (!google::protobuf::TextFormat::PrintToString(*config, &text)) {
    return Fail(absl::InternalError("cannot print the config"));
  }
  std::printf("%s%s", text.c_str(),
              text.empty() || text.back() == '\n' ? "" : "\n");
  return 0;
}

int Quantize(const CliArgs& args) {
  if (!args.Has("calibration")) return Usage("quantize needs --calibration");
  auto config = common::QuantizeModelDir(args.positional()[0],
                                         args.Get("calibration"), &std::cerr);
  if (!config.ok()) return Fail(config.status());
  std::printf("quantized %s in %s\n", common::ModelLabel(*config).c_str(),
              args.positional()[0].c_str());
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
       {"preset", "split", "rows-scale", "seed", "version", "out",
        "calibration-samples"},
       {"help"},
       0},
      {"preset", Preset, {"split", "rows-scale"}, {"json", "help"}, 1},
      {"quantize", Quantize, {"calibration"}, {"help"}, 1},
      {"inspect", Inspect, {}, {"json", "help"}, 1},
      {"verify", Verify, {}, {"help"}, 1},
      {"compare",
       Compare,
       {"queries", "candidates", "seed", "int8-arithmetic"},
       {"help"},
       1},
      {"score", Score, {"queries", "out", "int8-arithmetic"}, {"help"}, 1},
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
                     ? absl::StrCat("expected a command (gen, preset, "
                                    "quantize, inspect, verify, compare or "
                                    "score) before any flag, got ",
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
    return Usage(absl::StrCat(
        name, name == "preset" ? " needs a preset name" : " needs DIR"));
  }
  return command->run(*parsed);
}

}  // namespace
}  // namespace duet::tools

int main(int argc, char** argv) {
  return duet::tools::Main(std::vector<std::string>(argv + 1, argv + argc));
}
