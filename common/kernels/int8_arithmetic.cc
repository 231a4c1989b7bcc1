#include "common/kernels/int8_arithmetic.h"

#include <algorithm>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/kernels/internal/onednn.h"
#include "oneapi/dnnl/dnnl_debug.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#include <sys/prctl.h>
#endif

namespace duet::common {
namespace {

using dnnl::memory;
using Dt = memory::data_type;
using Tag = memory::format_tag;

// The row counts the MLPs build primitives for (one row; chunks of 16), and a
// width at which oneDNN uses the same kernels as for the models' layers.
constexpr int64_t kProbeRows[] = {1, 16};
constexpr int64_t kProbeK = 256;
constexpr int64_t kProbeN = 64;

struct ProbeResult {
  bool exact = true;
  std::string implementation;
};

// One s32 matmul of u8 src codes [m, k] by s8 weights [k, n] whose every
// product pair is at its largest in row 0 and random in range after.
ProbeResult ProbeMatmul(const Int8LayerRanges& r, int64_t m) {
  std::mt19937 rng(static_cast<uint32_t>(m * 31 + r.weight_max));
  std::uniform_int_distribution<int32_t> src_code(r.input_min, r.input_max);
  std::uniform_int_distribution<int32_t> w_code(-r.weight_max, r.weight_max);
  std::vector<int32_t> src(m * kProbeK), w(kProbeK * kProbeN);
  for (int64_t i = 0; i < m * kProbeK; ++i) {
    src[i] = i < kProbeK ? r.input_max : src_code(rng);
  }
  for (int64_t i = 0; i < kProbeK * kProbeN; ++i) {
    w[i] = i % kProbeN == 0 ? r.weight_max : w_code(rng);
  }
  std::vector<uint8_t> src_bytes(src.size());
  std::vector<int8_t> w_bytes(w.size());
  for (size_t i = 0; i < src.size(); ++i) {
    src_bytes[i] = static_cast<uint8_t>(src[i]);
  }
  for (size_t i = 0; i < w.size(); ++i) w_bytes[i] = static_cast<int8_t>(w[i]);

  dnnl::engine& eng = internal::CpuEngine();
  dnnl::stream stream(eng);
  const memory::desc src_md({m, kProbeK}, Dt::u8, Tag::ab);
  const memory::desc dst_md({m, kProbeN}, Dt::s32, Tag::ab);
  const dnnl::matmul::primitive_desc pd(
      dnnl::matmul::desc(src_md, {{kProbeK, kProbeN}, Dt::s8, Tag::any},
                         dst_md),
      eng);
  memory plain({{kProbeK, kProbeN}, Dt::s8, Tag::ab}, eng, w_bytes.data());
  memory packed(pd.weights_desc(), eng);
  dnnl::reorder(plain, packed).execute(stream, plain, packed);
  std::vector<int32_t> dst(m * kProbeN);
  memory src_mem(src_md, eng, src_bytes.data());
  memory dst_mem(dst_md, eng, dst.data());
  dnnl::matmul(pd).execute(stream, {{DNNL_ARG_SRC, src_mem},
                                    {DNNL_ARG_WEIGHTS, packed},
                                    {DNNL_ARG_DST, dst_mem}});
  stream.wait();

  ProbeResult result;
  result.implementation = pd.impl_info_str();
  for (int64_t row = 0; row < m && result.exact; ++row) {
    for (int64_t col = 0; col < kProbeN; ++col) {
      int64_t exact = 0;
      for (int64_t k = 0; k < kProbeK; ++k) {
        exact += int64_t{src[row * kProbeK + k]} * w[k * kProbeN + col];
      }
      if (exact != dst[row * kProbeN + col]) {
        result.exact = false;
        break;
      }
    }
  }
  return result;
}

// The ISA oneDNN may use. Its public query (2.6) names x86 ISAs only and on
// aarch64 returns values that read as x86 names ("avx512_mic_4ops"), so
// there this names what the CPU offers, as oneDNN's verbose mode does:
// asimd or sve_<bits> (an ONEDNN_MAX_CPU_ISA cap is not reflected).
std::string EffectiveIsa() {
#if defined(__aarch64__)
#if defined(HWCAP_SVE) && defined(PR_SVE_GET_VL)
  if ((getauxval(AT_HWCAP) & HWCAP_SVE) != 0) {
    const int vl = prctl(PR_SVE_GET_VL);
    if (vl > 0) return absl::StrCat("sve_", (vl & PR_SVE_VL_LEN_MASK) * 8);
  }
#endif
  return "asimd";
#else
  const char* isa = dnnl_cpu_isa2str(
      static_cast<dnnl_cpu_isa_t>(dnnl::get_effective_cpu_isa()));
  std::string name = isa != nullptr ? isa : "unknown";
  if (absl::StartsWith(name, "cpu_isa_")) name.erase(0, 8);
  return name;
#endif
}

Int8KernelReport Probe() {
  internal::PinOneDnnToCallingThread();
  Int8KernelReport report;
  report.isa = EffectiveIsa();
  std::vector<std::string> implementations;
  try {
    for (Int8Arithmetic a : kAllInt8Arithmetics) {
      // Every layer's input is u8; the first layer's zero point does not
      // change the codes' range.
      bool exact = true;
      for (int64_t m : kProbeRows) {
        const ProbeResult r = ProbeMatmul(LayerRanges(a, false), m);
        exact = exact && r.exact;
        if (a == Int8Arithmetic::kFull &&
            std::find(implementations.begin(), implementations.end(),
                      r.implementation) == implementations.end()) {
          implementations.push_back(r.implementation);
        }
      }
      report.exact[static_cast<int>(a)] = exact;
    }
  } catch (const dnnl::error& e) {
    report.exact = {};
    implementations = {std::string("probe failed: ") + e.what()};
  }
  report.implementation = absl::StrJoin(implementations, "/");
  // The most accurate exact one (kAllInt8Arithmetics is in that order).
  report.recommended = Int8Arithmetic::kFull;
  for (Int8Arithmetic a : kAllInt8Arithmetics) {
    if (report.IsExact(a)) {
      report.recommended = a;
      break;
    }
  }
  return report;
}

}  // namespace

absl::StatusOr<Int8Arithmetic> ParseInt8Arithmetic(absl::string_view name) {
  for (Int8Arithmetic a : kAllInt8Arithmetics) {
    if (name == Int8ArithmeticName(a)) return a;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "int8 arithmetic '%s' is not one of full, reduced-weights, "
      "reduced-activations",
      name));
}

const char* Int8ArithmeticName(Int8Arithmetic a) {
  switch (a) {
    case Int8Arithmetic::kFull:
      return "full";
    case Int8Arithmetic::kReducedWeights:
      return "reduced-weights";
    case Int8Arithmetic::kReducedActivations:
      return "reduced-activations";
  }
  return "unknown";
}

Int8LayerRanges LayerRanges(Int8Arithmetic a, bool first_layer) {
  Int8LayerRanges r;
  r.weight_max = a == Int8Arithmetic::kReducedWeights ? 63 : 127;
  r.input_min = 0;
  r.input_max = a == Int8Arithmetic::kReducedActivations ? 127 : 255;
  // The first layer's input is signed: centred on the zero point.
  r.input_zero_point = first_layer ? (r.input_max + 1) / 2 : 0;
  return r;
}

std::string Int8KernelReport::Describe() const {
  std::vector<std::string> exact_names;
  for (Int8Arithmetic a : kAllInt8Arithmetics) {
    if (IsExact(a)) exact_names.push_back(Int8ArithmeticName(a));
  }
  return absl::StrCat(
      "oneDNN isa ", isa, ", int8 matmul ", implementation, "; exact: ",
      exact_names.empty() ? "none" : absl::StrJoin(exact_names, ", "),
      IsExact(Int8Arithmetic::kFull)
          ? ""
          : " (full 8-bit codes saturate the int16 pair sums here)");
}

const Int8KernelReport& Int8Kernels() {
  static const Int8KernelReport* report = new Int8KernelReport(Probe());
  return *report;
}

}  // namespace duet::common
