#include "common/model/model_generator.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/format/safetensors.h"
#include "common/kernels/mlp.h"
#include "common/kernels/mlp_reference.h"
#include "common/model/catalog.h"
#include "common/model/internal/weight_file_writer.h"
#include "common/model/mlp_quantizer.h"
#include "common/model/model_config.h"
#include "common/model/model_quantizer.h"

namespace duet::common {
namespace {

using duet::v1::ModelConfig;

uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char ch : name) {
    h = (h ^ ch) * 0x100000001b3ULL;
  }
  return h;
}

uint64_t TensorSeed(uint64_t seed, const std::string& name) {
  return Mix(Mix(seed) ^ NameHash(name));
}

inline float UniformFromSeed(uint64_t tensor_seed, uint64_t i) {
  // 24 random bits -> [-1, 1).
  const uint64_t bits = Mix(tensor_seed + i) >> 40;
  return static_cast<float>(bits) * (2.0f / 16777216.0f) - 1.0f;
}

// How each tensor is initialised. Embedding rows are scaled by
// 1/sqrt(bag size) so pooled sums have O(1) magnitude; Linear weights use He
// uniform init (sqrt(6 / fan_in)) so activations neither vanish nor explode
// through the deep stacks and CTRs spread over (0, 1) — a flat synthetic
// model would make ranking and int8 accuracy tests meaningless.
struct Init {
  float scale;
};

Init TableInit(int bag) { return {1.0f / std::sqrt(static_cast<float>(bag))}; }
Init WeightInit(int fan_in) {
  return {std::sqrt(6.0f / static_cast<float>(fan_in))};
}
constexpr Init kBiasInit{0.1f};

// Streams one tensor's synthetic values into the writer.
absl::Status StreamTensor(SafetensorsWriter* writer, uint64_t seed,
                          const std::string& name, uint64_t count, Init init) {
  const uint64_t tseed = TensorSeed(seed, name);
  constexpr uint64_t kChunk = 1 << 18;
  std::vector<float> buf(std::min<uint64_t>(count, kChunk));
  for (uint64_t begin = 0; begin < count; begin += kChunk) {
    const uint64_t n = std::min<uint64_t>(kChunk, count - begin);
    for (uint64_t i = 0; i < n; ++i) {
      buf[i] = init.scale * UniformFromSeed(tseed, begin + i);
    }
    RETURN_IF_ERROR(writer->Append(buf.data(), n * sizeof(float)));
  }
  return absl::OkStatus();
}

// Materialises one small fp32 tensor (MLP weights) in memory.
std::vector<float> SmallTensor(uint64_t seed, const std::string& name,
                               uint64_t count, Init init) {
  const uint64_t tseed = TensorSeed(seed, name);
  std::vector<float> v(count);
  for (uint64_t i = 0; i < count; ++i) {
    v[i] = init.scale * UniformFromSeed(tseed, i);
  }
  return v;
}

// Owns the fp32 values of one MLP while a file is written.
struct MlpValues {
  std::vector<std::vector<float>> weights, biases;
  std::vector<LinearLayer> Views(int in) const {
    std::vector<LinearLayer> layers;
    for (size_t i = 0; i < weights.size(); ++i) {
      const int out = static_cast<int>(biases[i].size());
      layers.push_back({in, out, weights[i].data(), biases[i].data()});
      in = out;
    }
    return layers;
  }
};

MlpValues MakeMlp(uint64_t seed, const std::string& prefix, int in,
                  const google::protobuf::RepeatedField<int32_t>& widths) {
  MlpValues m;
  for (const auto& [fan_in, fan_out] :
       MlpShapes(in, std::vector<int>(widths.begin(), widths.end()))) {
    const std::string p = absl::StrCat(prefix, ".", m.weights.size());
    m.weights.push_back(SmallTensor(seed, p + ".weight",
                                    static_cast<uint64_t>(fan_in) * fan_out,
                                    WeightInit(fan_in)));
    m.biases.push_back(SmallTensor(seed, p + ".bias", fan_out, kBiasInit));
  }
  return m;
}

absl::Status AppendFloats(SafetensorsWriter* w, const std::vector<float>& v) {
  return w->Append(v.data(), v.size() * sizeof(float));
}

// Appends the named tensor of an MLP ("<prefix>.<i>.weight|bias").
absl::Status AppendMlpTensor(SafetensorsWriter* w, const MlpValues& m,
                             const std::string& prefix,
                             const std::string& name) {
  for (size_t i = 0; i < m.weights.size(); ++i) {
    const std::string p = absl::StrCat(prefix, ".", i);
    if (name == p + ".weight") return AppendFloats(w, m.weights[i]);
    if (name == p + ".bias") return AppendFloats(w, m.biases[i]);
  }
  return absl::InternalError(absl::StrCat("no tensor ", name, " in ", prefix));
}

}  // namespace

float SyntheticUniform(uint64_t seed, const std::string& name, uint64_t i) {
  return UniformFromSeed(TensorSeed(seed, name), i);
}

absl::StatusOr<ModelConfig> GenerateModel(ModelConfig config,
                                          const GenerateOptions& options,
                                          std::ostream* log) {
  const uint64_t seed = options.seed;
  config.set_seed(seed);
  config.set_version(options.version);
  config.mutable_catalog()->set_seed(Mix(seed ^ 0xca7a10ULL));
  config.clear_files();
  config.clear_user_top_int8();
  config.set_signature("0000000000000000");
  if (config.split_depth() == 0) config.set_split_depth(SplitDepth(config));
  RETURN_IF_ERROR(ValidateConfig(config));
  if (options.calibration_samples <= 0) {
    return absl::InvalidArgumentError("calibration_samples must be positive");
  }
  const std::string& dir = options.out_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  // A half-written directory must not look like a model.
  ::unlink((dir + "/" + kConfigFile).c_str());

  const ModelDims d = ComputeDims(config);
  const int dim = config.embedding_dim();
  auto say = [log](const std::string& line) {
    if (log != nullptr) *log << line << std::endl;
  };
  auto timed = [&](const std::string& file, auto fn) -> absl::Status {
    const auto start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(const internal::WrittenFile r, fn());
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    auto* f = config.add_files();
    f->set_name(file);
    f->set_sha256(r.sha256);
    f->set_size_bytes(static_cast<int64_t>(r.size));
    say(absl::StrFormat("wrote %s/%s: %.1f MB in %.2f s (sha256 %s)", dir, file,
                        r.size / 1e6, secs, r.sha256));
    return absl::OkStatus();
  };

  // 1. Datacenter user tables (the big one for most presets).
  RETURN_IF_ERROR(timed(kUserTablesFile, [&]() {
    return internal::WriteWeightFile(
        config, dir, kUserTablesFile,
        [&](SafetensorsWriter* w, const TensorSpec& s) {
          const int t = std::stoi(s.name.substr(12));
          return StreamTensor(
              w, seed, s.name, s.shape[0] * s.shape[1],
              TableInit(config.user_tables(t).history_length()));
        });
  }));

  // 2. Cloud: item tables, item top MLP, combined top MLP.
  const MlpValues item_top =
      MakeMlp(seed, "item_top", d.item_top_in, config.item_top_layers());
  const MlpValues combined = MakeMlp(seed, "combined_top", d.combined_in,
                                     config.combined_top_layers());
  RETURN_IF_ERROR(timed(kCloudFile, [&]() {
    return internal::WriteWeightFile(
        config, dir, kCloudFile,
        [&](SafetensorsWriter* w, const TensorSpec& s) -> absl::Status {
          if (s.name.rfind("item_tables.", 0) == 0) {
            const int t = std::stoi(s.name.substr(12));
            return StreamTensor(
                w, seed, s.name, s.shape[0] * s.shape[1],
                TableInit(config.item_tables(t).lookups_per_item()));
          }
          if (s.name.rfind("item_top.", 0) == 0) {
            return AppendMlpTensor(w, item_top, "item_top", s.name);
          }
          return AppendMlpTensor(w, combined, "combined_top", s.name);
        });
  }));

  // 3. Edge: bottom MLPs, fp32 user top MLP and its int8 form, calibrated on
  // synthetic users: dense features uniform in [0, 1), full histories of
  // random catalog items whose rows come from the same weight stream as
  // user_tables.safetensors.
  const MlpValues static_bottom = MakeMlp(seed, "static_bottom", d.static_in,
                                          config.static_bottom_layers());
  const MlpValues dynamic_bottom = MakeMlp(seed, "dynamic_bottom", d.dynamic_in,
                                           config.dynamic_bottom_layers());
  const MlpValues user_top =
      MakeMlp(seed, "user_top", d.user_top_in, config.user_top_layers());
  const int samples = options.calibration_samples;
  std::vector<float> calib(static_cast<size_t>(samples) * d.user_top_in, 0.0f);
  {
    const Catalog catalog(config);
    const auto sb = static_bottom.Views(d.static_in);
    const auto db = dynamic_bottom.Views(d.dynamic_in);
    const uint64_t input_seed = TensorSeed(seed, "calibration_inputs");
    std::vector<float> s(d.static_in), c(d.dynamic_in);
    std::vector<float> zs(d.static_out), zc(d.dynamic_out);
    for (int n = 0; n < samples; ++n) {
      float* row = calib.data() + static_cast<size_t>(n) * d.user_top_in;
      const uint64_t base = static_cast<uint64_t>(n) << 32;
      for (int i = 0; i < d.static_in; ++i) {
        s[i] = 0.5f + 0.5f * UniformFromSeed(input_seed, base + i);
      }
      for (int i = 0; i < d.dynamic_in; ++i) {
        c[i] = 0.5f + 0.5f * UniformFromSeed(input_seed, base + (1 << 20) + i);
      }
      if (sb.empty())
        zs = s;
      else
        Fp32MlpRef(sb, Activation::kRelu, s.data(), 1, zs.data());
      if (db.empty())
        zc = c;
      else
        Fp32MlpRef(db, Activation::kRelu, c.data(), 1, zc.data());
      std::copy(zs.begin(), zs.end(), row);
      std::copy(zc.begin(), zc.end(), row + d.static_out);
      float* pooled = row + d.static_out + d.dynamic_out;
      for (int t = 0; t < config.user_tables_size(); ++t) {
        const auto& ut = config.user_tables(t);
        const std::string name = absl::StrCat("user_tables.", t, ".weight");
        const uint64_t tseed = TensorSeed(seed, name);
        const float scale = TableInit(ut.history_length()).scale;
        for (int h = 0; h < ut.history_length(); ++h) {
          const int64_t item = static_cast<int64_t>(
              Mix(input_seed ^ (base + (2 << 20) + h)) %
              static_cast<uint64_t>(config.catalog().num_items()));
          const uint64_t key =
              static_cast<uint64_t>(catalog.HistoryKey(item, t));
          for (int j = 0; j < dim; ++j) {
            pooled[t * dim + j] +=
                scale * UniformFromSeed(tseed, key * dim + j);
          }
        }
      }
    }
  }
  RETURN_IF_ERROR(timed(kEdgeFile, [&]() {
    return internal::WriteWeightFile(
        config, dir, kEdgeFile,
        [&](SafetensorsWriter* w, const TensorSpec& s) -> absl::Status {
          for (auto [prefix, mlp] :
               {std::pair{"static_bottom", &static_bottom},
                std::pair{"dynamic_bottom", &dynamic_bottom}}) {
            if (s.name.rfind(std::string(prefix) + ".", 0) == 0) {
              return AppendMlpTensor(w, *mlp, prefix, s.name);
            }
          }
          return AppendMlpTensor(w, user_top, "user_top", s.name);
        });
  }));
  // Stored in full 8-bit arithmetic; a device whose int8 kernels saturate
  // re-quantizes it at load (Model::Load, RequantizeMlp).
  const auto int8_start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(
      WriteUserTopInt8(dir,
                       QuantizeMlp(user_top.Views(d.user_top_in), calib.data(),
                                   samples, Int8Arithmetic::kFull),
                       samples, &config));
  const duet::v1::WeightFile& int8_file =
      *internal::FileEntry(&config, kEdgeInt8File);
  say(absl::StrFormat("wrote %s/%s: %.1f MB in %.2f s (sha256 %s)", dir,
                      kEdgeInt8File, int8_file.size_bytes() / 1e6,
                      std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - int8_start)
                          .count(),
                      int8_file.sha256()));

  config.set_signature(ComputeSignature(config));
  RETURN_IF_ERROR(WriteConfig(dir + "/" + kConfigFile, config));
  say(absl::StrCat("wrote ", dir, "/", kConfigFile, ": ", ModelLabel(config)));
  return config;
}

}  // namespace duet::common
