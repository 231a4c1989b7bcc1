#include "common/model/model.h"

#include <sys/stat.h>

#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/format/sha256.h"
#include "common/model/mlp_quantizer.h"

namespace duet::common {
namespace {

using duet::v1::ModelConfig;

std::string JoinPath(const std::string& dir, const std::string& file) {
  return dir.empty() || dir.back() == '/' ? dir + file : dir + "/" + file;
}

const duet::v1::WeightFile* FindFileEntry(const ModelConfig& config,
                                          const std::string& name) {
  for (const auto& f : config.files()) {
    if (f.name() == name) return &f;
  }
  return nullptr;
}

// Size and SHA-256 of the file against the config's record.
absl::Status CheckFileChecksum(const std::string& dir,
                               const ModelConfig& config,
                               const std::string& name, bool hash) {
  const duet::v1::WeightFile* entry = FindFileEntry(config, name);
  if (entry == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(kConfigFile, " has no files entry for ", name));
  }
  const std::string path = JoinPath(dir, name);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  if (st.st_size != entry->size_bytes()) {
    return absl::DataLossError(absl::StrFormat(
        "%s is %d bytes, %s records %d (truncated or replaced?)", path,
        static_cast<int64_t>(st.st_size), kConfigFile, entry->size_bytes()));
  }
  if (!hash) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::string digest, Sha256File(path));
  if (digest != entry->sha256()) {
    return absl::DataLossError(absl::StrCat(path, " has SHA-256 ", digest, ", ",
                                            kConfigFile, " records ",
                                            entry->sha256()));
  }
  return absl::OkStatus();
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "I8") return DType::kI8;
  return absl::InternalError(absl::StrCat("unexpected dtype ", name));
}

// The file holds exactly the tensors the config implies.
absl::Status CheckTensors(const SafetensorsFile& file,
                          const ModelConfig& config, const std::string& name) {
  const auto expected = ExpectedTensors(config, name);
  absl::flat_hash_set<std::string> names;
  for (const auto& e : expected) {
    ASSIGN_OR_RETURN(const DType dtype, ParseDType(e.dtype));
    RETURN_IF_ERROR(file.Get(e.name, dtype, e.shape).status());
    names.insert(e.name);
  }
  for (const auto& t : file.tensors()) {
    if (!names.contains(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), " holds unexpected tensor '", t.name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenChecked(
    const std::string& dir, const ModelConfig& config, const std::string& name,
    bool hash) {
  RETURN_IF_ERROR(CheckFileChecksum(dir, config, name, hash));
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(JoinPath(dir, name)));
  RETURN_IF_ERROR(CheckTensors(*file, config, name));
  return file;
}

const float* F32(const SafetensorsFile& f, const std::string& name) {
  return static_cast<const float*>(f.data(*f.Find(name)));
}

std::vector<LinearLayer> Layers(
    const SafetensorsFile& f, const std::string& prefix, int in,
    const google::protobuf::RepeatedField<int32_t>& w) {
  std::vector<LinearLayer> layers;
  for (const auto& [fan_in, fan_out] :
       MlpShapes(in, std::vector<int>(w.begin(), w.end()))) {
    const std::string p = absl::StrCat(prefix, ".", layers.size());
    layers.push_back(
        {fan_in, fan_out, F32(f, p + ".weight"), F32(f, p + ".bias")});
  }
  return layers;
}

absl::StatusOr<std::unique_ptr<Fp32Mlp>> MaybeMlp(
    const std::vector<LinearLayer>& layers, Activation last) {
  if (layers.empty()) return std::unique_ptr<Fp32Mlp>();
  return Fp32Mlp::Create(layers, last);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir,
                                                   const LoadOptions& options) {
  auto model = std::unique_ptr<Model>(new Model());
  model->dir_ = dir;
  ASSIGN_OR_RETURN(model->config_, ReadConfig(JoinPath(dir, kConfigFile)));
  const ModelConfig& c = model->config_;
  model->dims_ = ComputeDims(c);
  model->catalog_ = Catalog(c);
  model->fingerprint_ = Fingerprint(c);
  if (model->fingerprint_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(JoinPath(dir, kConfigFile), ": signature '", c.signature(),
                     "' is not 16 hex digits"));
  }
  const ModelDims& d = model->dims_;
  const bool hash = options.verify_checksums;

  if (options.parts.edge) {
    ASSIGN_OR_RETURN(model->edge_file_, OpenChecked(dir, c, kEdgeFile, hash));
    const SafetensorsFile& f = *model->edge_file_;
    model->static_bottom_layers_ =
        Layers(f, "static_bottom", d.static_in, c.static_bottom_layers());
    model->dynamic_bottom_layers_ =
        Layers(f, "dynamic_bottom", d.dynamic_in, c.dynamic_bottom_layers());
    model->user_top_layers_ =
        Layers(f, "user_top", d.user_top_in, c.user_top_layers());
    ASSIGN_OR_RETURN(model->static_bottom_,
                     MaybeMlp(model->static_bottom_layers_, Activation::kRelu));
    ASSIGN_OR_RETURN(
        model->dynamic_bottom_,
        MaybeMlp(model->dynamic_bottom_layers_, Activation::kRelu));
    ASSIGN_OR_RETURN(model->user_top_, Fp32Mlp::Create(model->user_top_layers_,
                                                       Activation::kRelu));
  }
  if (options.parts.edge && options.parts.user_top_int8) {
    if (!c.has_user_top_int8()) {
      return absl::FailedPreconditionError(absl::StrCat(
          JoinPath(dir, kConfigFile), ": ", ModelLabel(c),
          " has no int8 user top MLP (an fp32 model): add it with "
          "`duet-model quantize ",
          dir, " --calibration FILE`, or serve the user model in fp32"));
    }
    const std::string int8_file = Int8TensorFile(c);
    if (int8_file != kEdgeFile) {
      ASSIGN_OR_RETURN(model->edge_int8_file_,
                       OpenChecked(dir, c, int8_file, hash));
    }
    const SafetensorsFile& f =
        int8_file == kEdgeFile ? *model->edge_file_ : *model->edge_int8_file_;
    for (size_t i = 0; i < model->user_top_layers_.size(); ++i) {
      const LinearLayer& l = model->user_top_layers_[i];
      const std::string p = absl::StrCat("user_top_int8.", i);
      model->user_top_int8_layers_.push_back(
          {l.in, l.out,
           static_cast<const int8_t*>(f.data(*f.Find(p + ".weight"))),
           F32(f, p + ".weight_scale"), F32(f, p + ".bias"),
           *F32(f, p + ".input_scale")});
    }
    const Int8Arithmetic arithmetic = options.int8_arithmetic.has_value()
                                          ? *options.int8_arithmetic
                                          : Int8Kernels().recommended;
    if (arithmetic != Int8Arithmetic::kFull) {
      ASSIGN_OR_RETURN(model->user_top_int8_params_,
                       RequantizeMlp(model->user_top_int8_layers_,
                                     model->user_top_layers_, arithmetic));
      model->user_top_int8_layers_ = model->user_top_int8_params_.Views();
    }
    ASSIGN_OR_RETURN(model->user_top_int8_,
                     Int8Mlp::Create(model->user_top_int8_layers_,
                                     Activation::kRelu, arithmetic));
  }
  if (options.parts.cloud) {
    ASSIGN_OR_RETURN(model->cloud_file_, OpenChecked(dir, c, kCloudFile, hash));
    const SafetensorsFile& f = *model->cloud_file_;
    for (int t = 0; t < c.item_tables_size(); ++t) {
      model->item_tables_.push_back(EmbeddingTable::Fp32(
          F32(f, absl::StrCat("item_tables.", t, ".weight")),
          c.item_tables(t).rows(), c.embedding_dim()));
    }
    model->item_top_layers_ =
        Layers(f, "item_top", d.item_top_in, c.item_top_layers());
    model->combined_top_layers_ =
        Layers(f, "combined_top", d.combined_in, c.combined_top_layers());
    ASSIGN_OR_RETURN(model->item_top_,
                     MaybeMlp(model->item_top_layers_, Activation::kRelu));
    ASSIGN_OR_RETURN(
        model->combined_top_,
        Fp32Mlp::Create(model->combined_top_layers_, Activation::kSigmoid));
  }
  if (options.parts.user_tables) {
    ASSIGN_OR_RETURN(model->user_file_,
                     OpenChecked(dir, c, kUserTablesFile, hash));
    const SafetensorsFile& f = *model->user_file_;
    for (int t = 0; t < c.user_tables_size(); ++t) {
      model->user_tables_.push_back(EmbeddingTable::Fp32(
          F32(f, absl::StrCat("user_tables.", t, ".weight")),
          c.user_tables(t).rows(), c.embedding_dim()));
    }
  }
  return model;
}

absl::Status VerifyModelDir(const std::string& dir, std::string* note) {
  const std::string path = JoinPath(dir, kConfigFile);
  ASSIGN_OR_RETURN(const ModelConfig config, ReadConfig(path));
  if (Fingerprint(config) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": signature '", config.signature(), "' is not 16 hex digits"));
  }
  for (const std::string& name : WeightFiles(config)) {
    RETURN_IF_ERROR(OpenChecked(dir, config, name, /*hash=*/true).status());
  }
  std::string remark;
  const std::string expected = ComputeSignature(config);
  if (config.signature() != expected) {
    if (config.signature() != LegacySignature(config)) {
      return absl::DataLossError(absl::StrCat(
          path, ": signature ", config.signature(), " does not match ",
          expected,
          ", the signature of this config and these files "
          "(model.proto, ModelConfig.signature: edited by hand, or the files "
          "were replaced?)"));
    }
    remark =
        "legacy signature (name, version and files only; written before "
        "split_depth existed): regenerate the model to sign its catalog "
        "and tables too. ";
  }
  if (!RankingCanDependOnUser(config)) {
    absl::StrAppend(
        &remark,
        "combined_top_layers is one linear layer: the order of a "
        "candidate set is the same for every user (the paper's "
        "split); generate with --split personalized to personalize.");
  }
  if (note != nullptr) *note = remark;
  return absl::OkStatus();
}

absl::Status RunOrIdentity(const Fp32Mlp* mlp, const float* in, int64_t m,
                           int width, float* out) {
  if (mlp != nullptr) return mlp->Run(in, m, out);
  if (m > 0 && width > 0) {
    std::memmove(out, in, static_cast<size_t>(m) * width * sizeof(float));
  }
  return absl::OkStatus();
}

}  // namespace duet::common
