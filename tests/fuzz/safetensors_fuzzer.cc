// libFuzzer target: arbitrary bytes as a safetensors file. The reader must
// return a status, never crash, and every tensor it accepts must lie inside
// the mapping (touching its first and last byte proves it under ASan).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/format/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      "/tmp/duet_safetensors_fuzz_" + std::to_string(::getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto file = duet::common::SafetensorsFile::Open(path);
  if (file.ok()) {
    volatile uint8_t sink = 0;
    for (const auto& t : (*file)->tensors()) {
      const auto* p = static_cast<const uint8_t*>((*file)->data(t));
      if (t.end > t.begin) sink ^= p[0] ^ p[t.end - t.begin - 1];
      (void)(*file)->Get(t.name, t.dtype, t.shape);
    }
    (void)sink;
  }
  return 0;
}
