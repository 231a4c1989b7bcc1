// Helpers shared by test suites: temporary directories and generated models.
#ifndef DUET_COMMON_MODEL_TEST_UTIL_H_
#define DUET_COMMON_MODEL_TEST_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/model/presets.h"
#include "duet/v1/model.pb.h"

namespace duet::common {

// A fresh directory under $TEST_TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Generates `preset` scaled by `rows_scale` into `dir` (seed 1 unless given)
// with 128 calibration samples, so suites stay fast.
absl::StatusOr<duet::v1::ModelConfig> GenerateTestModel(
    const std::string& preset, double rows_scale, const std::string& dir,
    uint64_t seed = 1, uint32_t version = 1,
    PresetSplit split = PresetSplit::kPersonalized);

// GET `path` from 127.0.0.1:`port` over HTTP/1.0 and return the whole
// response (status line, headers, body), read up to Content-Length (the
// prometheus-cpp exposer may keep the socket open); "" if the connection
// or the write fails.
std::string HttpGetResponse(int port, const std::string& path);

}  // namespace duet::common

#endif  // DUET_COMMON_MODEL_TEST_UTIL_H_
