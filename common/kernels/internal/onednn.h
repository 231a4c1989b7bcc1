// The process's oneDNN CPU engine and per-thread set-up, shared by the MLPs
// and the int8 kernel probe. Internal to duet_kernels.
#ifndef DUET_COMMON_KERNELS_INTERNAL_ONEDNN_H_
#define DUET_COMMON_KERNELS_INTERNAL_ONEDNN_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "dnnl.hpp"

namespace duet::common::internal {

// One CPU engine for the process (never destroyed: thread_local streams may
// outlive static destructors).
dnnl::engine& CpuEngine();

// Makes oneDNN run single-threaded on the calling thread (Debian's libdnnl
// uses OpenMP, which would start a thread team per calling thread and
// oversubscribe the worker pools). Cheap after the first call per thread.
void PinOneDnnToCallingThread();

// INTERNAL status for a oneDNN exception: "oneDNN failed to <what>: ...".
absl::Status DnnlError(const dnnl::error& e, absl::string_view what);

}  // namespace duet::common::internal

#endif  // DUET_COMMON_KERNELS_INTERNAL_ONEDNN_H_
