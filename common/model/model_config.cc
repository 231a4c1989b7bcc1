#include "common/model/model_config.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/format/sha256.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace duet::common {
namespace {

using duet::v1::ModelConfig;

// Bounds that keep every derived width and byte count far from integer
// overflow; the largest preset (rm3) is orders of magnitude below them.
constexpr int kMaxWidth = 1 << 16;  // layer widths, dense inputs, d
constexpr int kMaxLayers = 64;
constexpr int kMaxTables = 1024;
constexpr int kMaxBag = 1 << 16;  // history_length, lookups_per_item
constexpr int64_t kMaxRows = int64_t{1} << 40;

absl::Status CheckWidths(const google::protobuf::RepeatedField<int32_t>& w,
                         absl::string_view field) {
  if (w.size() > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d layers, at most %d are supported", field,
                        w.size(), kMaxLayers));
  }
  for (int i = 0; i < w.size(); ++i) {
    if (w[i] <= 0 || w[i] > kMaxWidth) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s[%d] is %d, layer widths must be in [1, %d]",
                          field, i, w[i], kMaxWidth));
    }
  }
  return absl::OkStatus();
}

int LastWidth(int in, const google::protobuf::RepeatedField<int32_t>& w) {
  return w.empty() ? in : w[w.size() - 1];
}

}  // namespace

absl::Status ValidateConfig(const ModelConfig& c) {
  if (c.name().empty()) return absl::InvalidArgumentError("name is empty");
  if (c.embedding_dim() <= 0 || c.embedding_dim() > kMaxWidth) {
    return absl::InvalidArgumentError(
        absl::StrFormat("embedding_dim is %d, must be in [1, %d]",
                        c.embedding_dim(), kMaxWidth));
  }
  if (c.num_static_dense() < 0 || c.num_dynamic_dense() < 0 ||
      c.num_static_dense() > kMaxWidth || c.num_dynamic_dense() > kMaxWidth) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "num_static_dense (%d) and num_dynamic_dense (%d) must be in [0, %d]",
        c.num_static_dense(), c.num_dynamic_dense(), kMaxWidth));
  }
  if (c.user_tables_size() > kMaxTables || c.item_tables_size() > kMaxTables) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d user tables and %d item tables, at most %d of each are supported",
        c.user_tables_size(), c.item_tables_size(), kMaxTables));
  }
  if (c.num_static_dense() == 0 && !c.static_bottom_layers().empty()) {
    return absl::InvalidArgumentError(
        "static_bottom_layers given but num_static_dense is 0");
  }
  if (c.num_dynamic_dense() == 0 && !c.dynamic_bottom_layers().empty()) {
    return absl::InvalidArgumentError(
        "dynamic_bottom_layers given but num_dynamic_dense is 0");
  }
  for (auto [w, f] :
       {std::pair{&c.static_bottom_layers(), "static_bottom_layers"},
        std::pair{&c.dynamic_bottom_layers(), "dynamic_bottom_layers"},
        std::pair{&c.user_top_layers(), "user_top_layers"},
        std::pair{&c.item_top_layers(), "item_top_layers"},
        std::pair{&c.combined_top_layers(), "combined_top_layers"}}) {
    if (auto s = CheckWidths(*w, f); !s.ok()) return s;
  }
  if (c.user_top_layers().empty()) {
    return absl::InvalidArgumentError("user_top_layers is empty");
  }
  if (c.split_depth() != 0 && c.split_depth() != c.user_top_layers_size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "split_depth is %d but user_top_layers has %d layers (the split "
        "layers of the user tower)",
        c.split_depth(), c.user_top_layers_size()));
  }
  if (!c.item_top_layers().empty() &&
      c.item_top_layers_size() != c.user_top_layers_size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "item_top_layers has %d layers, user_top_layers %d: the towers split "
        "the same top-MLP layers (or the item tower is empty)",
        c.item_top_layers_size(), c.user_top_layers_size()));
  }
  if (c.combined_top_layers().empty() ||
      c.combined_top_layers(c.combined_top_layers_size() - 1) != 1) {
    return absl::InvalidArgumentError(
        "combined_top_layers must end with a layer of width 1 (the CTR)");
  }
  if (c.user_tables().empty()) {
    return absl::InvalidArgumentError("user_tables is empty");
  }
  if (c.item_tables().empty()) {
    return absl::InvalidArgumentError("item_tables is empty");
  }
  for (int t = 0; t < c.user_tables_size(); ++t) {
    const auto& u = c.user_tables(t);
    if (u.rows() <= 0 || u.history_length() <= 0 || u.rows() > kMaxRows ||
        u.history_length() > kMaxBag) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "user_tables[%d] (%s): rows %d and history_length %d must be "
          "positive (and at most 2^40, 65536)",
          t, u.name(), u.rows(), u.history_length()));
    }
  }
  for (int t = 0; t < c.item_tables_size(); ++t) {
    const auto& it = c.item_tables(t);
    if (it.rows() <= 0 || it.lookups_per_item() <= 0 || it.rows() > kMaxRows ||
        it.lookups_per_item() > kMaxBag) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "item_tables[%d] (%s): rows %d and lookups_per_item %d must be "
          "positive (and at most 2^40, 65536)",
          t, it.name(), it.rows(), it.lookups_per_item()));
    }
  }
  if (c.catalog().num_items() <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "catalog.num_items is %d, must be positive", c.catalog().num_items()));
  }
  return absl::OkStatus();
}

ModelDims ComputeDims(const ModelConfig& c) {
  ModelDims d;
  const int dim = c.embedding_dim();
  d.static_in = c.num_static_dense();
  d.static_out = LastWidth(d.static_in, c.static_bottom_layers());
  d.dynamic_in = c.num_dynamic_dense();
  d.dynamic_out = LastWidth(d.dynamic_in, c.dynamic_bottom_layers());
  d.pooled = c.user_tables_size() * dim;
  d.user_top_in = d.static_out + d.dynamic_out + d.pooled;
  d.user_out = LastWidth(d.user_top_in, c.user_top_layers());
  d.item_top_in = c.item_tables_size() * dim;
  d.item_out = LastWidth(d.item_top_in, c.item_top_layers());
  d.combined_in = d.user_out + d.item_out;
  return d;
}

int64_t ScratchpadBytes(const ModelConfig& c) {
  int64_t rows = 0;
  for (const auto& t : c.user_tables()) rows += t.history_length();
  return rows * c.embedding_dim() * static_cast<int64_t>(sizeof(float));
}

absl::StatusOr<ModelConfig> ReadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open model config ", path,
                                            ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path);
}

absl::StatusOr<ModelConfig> ParseConfig(const std::string& text,
                                        const std::string& source) {
  // Collect parser errors into the status message instead of stderr.
  struct Collector : google::protobuf::io::ErrorCollector {
    std::string errors;
    void AddError(int line, int column, const std::string& message) override {
      absl::StrAppendFormat(&errors, "line %d column %d: %s; ", line + 1,
                            column + 1, message);
    }
  } collector;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  ModelConfig config;
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse ", source, ": ", collector.errors));
  }
  if (auto s = ValidateConfig(config); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  }
  return config;
}

absl::Status WriteConfig(const std::string& path, const ModelConfig& config) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(config, &text)) {
    return absl::InternalError("cannot print model config");
  }
  text =
      "# proto-file: duet/v1/model.proto\n# proto-message: "
      "duet.v1.ModelConfig\n" +
      text;
  const std::string tmp = path + ".tmp";
  const int fd =
      ::open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot install ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int SplitDepth(const ModelConfig& config) {
  return config.split_depth() != 0 ? config.split_depth()
                                   : config.user_top_layers_size();
}

bool RankingCanDependOnUser(const ModelConfig& config) {
  return config.combined_top_layers_size() >= 2;
}

std::string ComputeSignature(const ModelConfig& c) {
  std::string material =
      absl::StrCat("duet.v1.ModelConfig/2:", c.name(), ":", c.version(),
                   ":split=", c.split_depth(), ":catalog=", c.catalog().seed(),
                   "/", c.catalog().num_items());
  for (const auto& t : c.user_tables()) {
    absl::StrAppend(&material, ":u=", t.rows(), "/", t.history_length());
  }
  for (const auto& t : c.item_tables()) {
    absl::StrAppend(&material, ":i=", t.rows(), "/", t.lookups_per_item());
  }
  for (const auto& f : c.files()) {
    absl::StrAppend(&material, ":", f.name(), "=", f.sha256());
  }
  return Sha256Hex(material.data(), material.size()).substr(0, 16);
}

std::string LegacySignature(const ModelConfig& c) {
  std::string material = absl::StrCat(c.name(), ":", c.version());
  for (const auto& f : c.files()) {
    absl::StrAppend(&material, ":", f.name(), "=", f.sha256());
  }
  return Sha256Hex(material.data(), material.size()).substr(0, 16);
}

uint64_t Fingerprint(const ModelConfig& config) {
  uint64_t value = 0;
  if (config.signature().size() != 16 ||
      !absl::SimpleHexAtoi(config.signature(), &value)) {
    return 0;
  }
  return value;
}

std::string ModelLabel(const ModelConfig& config) {
  return absl::StrFormat("%s v%d (signature %s)", config.name(),
                         config.version(), config.signature());
}

std::vector<std::pair<int, int>> MlpShapes(int in,
                                           const std::vector<int>& widths) {
  std::vector<std::pair<int, int>> shapes;
  for (int w : widths) {
    shapes.emplace_back(in, w);
    in = w;
  }
  return shapes;
}

namespace {

void AddLinear(std::vector<ExpectedTensor>* out, const std::string& prefix,
               int in, const google::protobuf::RepeatedField<int32_t>& widths) {
  const auto shapes =
      MlpShapes(in, std::vector<int>(widths.begin(), widths.end()));
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto [fan_in, fan_out] = shapes[i];
    out->push_back(
        {absl::StrCat(prefix, ".", i, ".weight"), "F32", {fan_out, fan_in}});
    out->push_back({absl::StrCat(prefix, ".", i, ".bias"), "F32", {fan_out}});
  }
}

}  // namespace

namespace {

bool ListsFile(const ModelConfig& c, const std::string& name) {
  for (const auto& f : c.files()) {
    if (f.name() == name) return true;
  }
  return false;
}

}  // namespace

std::string Int8TensorFile(const ModelConfig& c) {
  if (!c.has_user_top_int8()) return "";
  return ListsFile(c, kEdgeInt8File) ? kEdgeInt8File : kEdgeFile;
}

std::vector<std::string> WeightFiles(const ModelConfig& c) {
  std::vector<std::string> files = {kEdgeFile, kCloudFile, kUserTablesFile};
  if (ListsFile(c, kEdgeInt8File)) files.push_back(kEdgeInt8File);
  return files;
}

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c,
                                            const std::string& file) {
  const ModelDims d = ComputeDims(c);
  std::vector<ExpectedTensor> out;
  if (file == kEdgeFile) {
    AddLinear(&out, "static_bottom", d.static_in, c.static_bottom_layers());
    AddLinear(&out, "dynamic_bottom", d.dynamic_in, c.dynamic_bottom_layers());
    AddLinear(&out, "user_top", d.user_top_in, c.user_top_layers());
  }
  if (file == Int8TensorFile(c)) {
    const auto shapes =
        MlpShapes(d.user_top_in, std::vector<int>(c.user_top_layers().begin(),
                                                  c.user_top_layers().end()));
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto [fan_in, fan_out] = shapes[i];
      const std::string p = absl::StrCat("user_top_int8.", i);
      out.push_back({p + ".weight", "I8", {fan_out, fan_in}});
      out.push_back({p + ".weight_scale", "F32", {fan_out}});
      out.push_back({p + ".bias", "F32", {fan_out}});
      out.push_back({p + ".input_scale", "F32", {1}});
    }
  }
  if (file == kCloudFile) {
    for (int t = 0; t < c.item_tables_size(); ++t) {
      out.push_back({absl::StrCat("item_tables.", t, ".weight"),
                     "F32",
                     {c.item_tables(t).rows(), c.embedding_dim()}});
    }
    AddLinear(&out, "item_top", d.item_top_in, c.item_top_layers());
    AddLinear(&out, "combined_top", d.combined_in, c.combined_top_layers());
  } else if (file == kUserTablesFile) {
    for (int t = 0; t < c.user_tables_size(); ++t) {
      out.push_back({absl::StrCat("user_tables.", t, ".weight"),
                     "F32",
                     {c.user_tables(t).rows(), c.embedding_dim()}});
    }
  }
  return out;
}

}  // namespace duet::common
