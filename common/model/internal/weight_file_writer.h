// Writes one weight file of a model directory with exactly the tensors
// ExpectedTensors lists for it (shared by the generator and the quantizer).
#ifndef DUET_COMMON_MODEL_INTERNAL_WEIGHT_FILE_WRITER_H_
#define DUET_COMMON_MODEL_INTERNAL_WEIGHT_FILE_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/format/safetensors.h"
#include "common/model/model_config.h"
#include "duet/v1/model.pb.h"

namespace duet::common::internal {

struct WrittenFile {
  std::string sha256;
  uint64_t size = 0;
};

// Writes dir/file (atomically: the writer renames a finished temporary file)
// with the tensors ExpectedTensors(config, file) lists, in that order;
// `produce(writer, spec)` appends the bytes of each.
template <typename Produce>
absl::StatusOr<WrittenFile> WriteWeightFile(const duet::v1::ModelConfig& config,
                                            const std::string& dir,
                                            const std::string& file,
                                            Produce produce) {
  std::vector<TensorSpec> specs;
  for (const auto& e : ExpectedTensors(config, file)) {
    specs.push_back(
        {e.name, e.dtype == "I8" ? DType::kI8 : DType::kF32, e.shape});
  }
  ASSIGN_OR_RETURN(
      auto writer,
      SafetensorsWriter::Create(dir + "/" + file, specs,
                                {{"format", "duet"},
                                 {"model", config.name()},
                                 {"version", absl::StrCat(config.version())}}));
  for (const auto& spec : specs) {
    RETURN_IF_ERROR(produce(writer.get(), spec));
  }
  RETURN_IF_ERROR(writer->Finish());
  return WrittenFile{writer->sha256_hex(), writer->file_size()};
}

// The config's files entry for `name`, added (at the end) if missing.
inline duet::v1::WeightFile* FileEntry(duet::v1::ModelConfig* config,
                                       const std::string& name) {
  for (auto& f : *config->mutable_files()) {
    if (f.name() == name) return &f;
  }
  auto* f = config->add_files();
  f->set_name(name);
  return f;
}

}  // namespace duet::common::internal

#endif  // DUET_COMMON_MODEL_INTERNAL_WEIGHT_FILE_WRITER_H_
