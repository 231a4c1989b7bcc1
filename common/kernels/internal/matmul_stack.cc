#include "common/kernels/internal/matmul_stack.h"

#include <algorithm>
#include <utility>

#include "common/kernels/internal/onednn.h"

namespace duet::common::internal {
namespace {

using dnnl::memory;
using Dt = memory::data_type;
using Tag = memory::format_tag;

size_t ElemSize(Dt dt) { return dt == Dt::f32 ? 4 : 1; }

}  // namespace

ThreadState& GetThreadState() {
  thread_local ThreadState state;
  if (!state.stream) state.stream.emplace(CpuEngine());
  return state;
}

std::atomic<uint64_t> MatmulStack::next_uid_{1};

absl::StatusOr<std::unique_ptr<MatmulStack>> MatmulStack::Create(
    std::vector<LayerSpec> specs) {
  auto stack = std::unique_ptr<MatmulStack>(new MatmulStack(std::move(specs)));
  PinOneDnnToCallingThread();
  try {
    common::MutexLock lock(&stack->mu_);
    stack->CreatePlanLocked(1);
  } catch (const dnnl::error& e) {
    return DnnlError(e, "create the matmul primitives");
  }
  return stack;
}

MatmulStack::MatmulStack(std::vector<LayerSpec> specs)
    : uid_(next_uid_.fetch_add(1)),
      specs_(std::move(specs)),
      in_row_bytes_(specs_[0].in * ElemSize(specs_[0].src_dt)),
      packed_(specs_.size()) {
  for (size_t l = 0; l + 1 < specs_.size(); ++l) {
    act_row_bytes_ =
        std::max(act_row_bytes_, specs_[l].out * ElemSize(specs_[l].dst_dt));
  }
}

void MatmulStack::Run(ThreadState& ts, const void* in, int64_t m,
                      float* out) const {
  const int64_t main = m >= kChunkRows ? m - m % kChunkRows : 0;
  const auto* in_bytes = static_cast<const uint8_t*>(in);
  if (main > 0) RunChunk(ts, in_bytes, main, out);
  if (m > main) {
    RunChunk(ts, in_bytes + main * in_row_bytes_, m - main,
             out + main * specs_.back().out);
  }
  ts.stream->wait();
}

std::vector<std::string> MatmulStack::Implementations() const {
  common::ReaderMutexLock lock(&mu_);
  return implementations_;
}

void MatmulStack::Prepare(int64_t max_m) const {
  for (int64_t m = 1; m <= max_m; m += m < kChunkRows ? 1 : kChunkRows) {
    GetPlan(m);
  }
}

std::vector<int64_t> MatmulStack::PlannedRowCounts() const {
  std::vector<int64_t> rows;
  {
    common::ReaderMutexLock lock(&mu_);
    for (const auto& [m, plan] : plans_) rows.push_back(m);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

const MatmulStack::Plan& MatmulStack::GetPlan(int64_t m) const {
  {
    common::ReaderMutexLock lock(&mu_);
    auto it = plans_.find(m);
    if (it != plans_.end()) return *it->second;
  }
  common::MutexLock lock(&mu_);
  return CreatePlanLocked(m);
}

const MatmulStack::Plan& MatmulStack::CreatePlanLocked(int64_t m) const {
  auto it = plans_.find(m);
  if (it != plans_.end()) return *it->second;
  dnnl::engine& eng = CpuEngine();
  auto plan = std::make_unique<Plan>();
  for (size_t l = 0; l < specs_.size(); ++l) {
    const LayerSpec& s = specs_[l];
    const memory::desc src({m, s.in}, s.src_dt, Tag::ab);
    const memory::desc weights_any({s.in, s.out}, s.wei_dt, Tag::any);
    const memory::desc bias({1, s.out}, Dt::f32, Tag::ab);
    const memory::desc dst({m, s.out}, s.dst_dt, Tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (!s.output_scales.empty())
      attr.set_output_scales(1 << 1, s.output_scales);
    if (s.post_op) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.0f, *s.post_op, s.post_op_alpha, s.post_op_beta);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(src, weights_any, bias, dst), attr, eng);
    LayerPlan lp{dnnl::matmul(pd),    src, pd.weights_desc(), bias, dst,
                 pd.scratchpad_desc()};
    lp.packed_weights = PackedWeightsLocked(l, lp.weights);
    if (std::string impl = pd.impl_info_str();
        std::find(implementations_.begin(), implementations_.end(), impl) ==
        implementations_.end()) {
      implementations_.push_back(std::move(impl));
    }
    plan->scratch_bytes =
        std::max(plan->scratch_bytes, pd.scratchpad_desc().get_size());
    plan->layers.push_back(std::move(lp));
  }
  return *(plans_[m] = std::move(plan));
}

// The preferred weight layout can depend on M (e.g. AVX-512 VNNI kernels
// for m = 1, AMX for larger m), so weights are packed once per layout.
void* MatmulStack::PackedWeightsLocked(size_t l,
                                       const memory::desc& desc) const {
  for (const auto& p : packed_[l]) {
    if (p->desc == desc) return p->data.data();
  }
  const LayerSpec& s = specs_[l];
  auto packed = std::make_unique<Packed>();
  packed->desc = desc;
  void* data = packed->data.Reserve(desc.get_size());
  dnnl::engine& eng = CpuEngine();
  // PyTorch's [out, in] row-major is the {in, out} matrix in format "ba".
  memory plain({{s.in, s.out}, s.wei_dt, Tag::ba}, eng,
               const_cast<uint8_t*>(s.weights.data()));
  memory target(desc, eng, data);
  dnnl::stream stream(eng);
  dnnl::reorder(plain, target).execute(stream, plain, target);
  stream.wait();
  packed_[l].push_back(std::move(packed));
  return data;
}

ThreadState::Context& MatmulStack::GetContext(ThreadState& ts, int64_t m,
                                              const Plan& plan) const {
  auto& slot = ts.contexts[{uid_, m}];
  if (slot) return *slot;
  // Entries of destroyed stacks are never looked up again (uids are not
  // reused); cap the map so they cannot accumulate without bound.
  if (ts.contexts.size() > 4096) {
    ts.contexts.clear();
    return GetContext(ts, m, plan);
  }
  dnnl::engine& eng = CpuEngine();
  auto ctx = std::make_unique<ThreadState::Context>();
  for (size_t l = 0; l < specs_.size(); ++l) {
    const LayerPlan& lp = plan.layers[l];
    ThreadState::LayerArgs la;
    la.src = memory(lp.src, eng, DNNL_MEMORY_NONE);
    la.dst = memory(lp.dst, eng, DNNL_MEMORY_NONE);
    la.scratch = memory(lp.scratch, eng, DNNL_MEMORY_NONE);
    la.args = {
        {DNNL_ARG_SRC, la.src},
        {DNNL_ARG_WEIGHTS, memory(lp.weights, eng, lp.packed_weights)},
        {DNNL_ARG_BIAS,
         memory(lp.bias, eng, const_cast<float*>(specs_[l].bias.data()))},
        {DNNL_ARG_DST, la.dst},
        {DNNL_ARG_SCRATCHPAD, la.scratch}};
    ctx->layers.push_back(std::move(la));
  }
  slot = std::move(ctx);
  return *slot;
}

void MatmulStack::RunChunk(ThreadState& ts, const uint8_t* in, int64_t m,
                           float* out) const {
  const Plan& plan = GetPlan(m);
  ThreadState::Context& ctx = GetContext(ts, m, plan);
  void* scratch = ts.scratch.Reserve(std::max<size_t>(plan.scratch_bytes, 1));
  void* act[2] = {ts.act[0].Reserve(m * act_row_bytes_ + 1),
                  ts.act[1].Reserve(m * act_row_bytes_ + 1)};
  const size_t n = specs_.size();
  for (size_t l = 0; l < n; ++l) {
    ThreadState::LayerArgs& la = ctx.layers[l];
    la.src.set_data_handle(l == 0 ? const_cast<uint8_t*>(in)
                                  : act[(l - 1) % 2]);
    la.dst.set_data_handle(l + 1 == n ? static_cast<void*>(out) : act[l % 2]);
    la.scratch.set_data_handle(scratch);
    plan.layers[l].prim.execute(*ts.stream, la.args);
  }
}

}  // namespace duet::common::internal
