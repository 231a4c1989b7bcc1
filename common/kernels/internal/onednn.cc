#include "common/kernels/internal/onednn.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace duet::common::internal {

dnnl::engine& CpuEngine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

void PinOneDnnToCallingThread() {
  thread_local bool pinned = false;
  if (pinned) return;
  pinned = true;
  if (dnnl_version()->cpu_runtime != DNNL_RUNTIME_OMP) return;
  // omp_set_num_threads sets a per-thread ICV. Looked up dynamically so we
  // need not link libgomp ourselves (libdnnl already loaded it); a no-op for
  // other runtimes.
  using SetNumThreads = void (*)(int);
  static const auto set_num_threads = reinterpret_cast<SetNumThreads>(
      dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_num_threads != nullptr) set_num_threads(1);
}

absl::Status DnnlError(const dnnl::error& e, absl::string_view what) {
  return absl::InternalError(absl::StrCat("oneDNN failed to ", what, ": ",
                                          e.what(), " (status ",
                                          static_cast<int>(e.status), ")"));
}

}  // namespace duet::common::internal
