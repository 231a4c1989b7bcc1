// ScoringServiceImpl's model-release RPCs: GetEdgeModel streams the edge
// part of a served version in chunks; GetModelStatus lists the versions.
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cloud/scoring_service_impl.h"
#include "common/base/mutex.h"
#include "common/rpc/grpc_status.h"
#include "common/rpc/message_bytes.h"

namespace duet::cloud {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

// Writes the chunks of one EdgePart: the config first, then each file in
// slices of kChunkBytes. The part stays alive (shared) until the stream
// ends, even if its version is retired meanwhile.
class EdgeModelWriter final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  EdgeModelWriter(std::shared_ptr<const EdgePart> part, CloudMetrics* metrics)
      : part_(std::move(part)), metrics_(metrics), start_(absl::Now()) {
    duet::v1::EdgeModelChunk& first = chunk_;
    *first.mutable_config() = part_->config;
    for (size_t i = 0; i < part_->files.size(); ++i) {
      const EdgePart::File& f = part_->files[i];
      first.add_files(f.name);
      size_t offset = 0;
      do {
        const size_t n = std::min(kChunkBytes, f.bytes.size() - offset);
        slices_.push_back({i, offset, n});
        offset += n;
      } while (offset < f.bytes.size());
    }
    Write();
  }

  // Release before each operation handed to gRPC, Acquire in each callback:
  // the hand-offs, told to TSan (common/base/mutex.h).
  void OnWriteDone(bool ok) override {
    common::tsan::Acquire(this);
    if (!ok) {
      metrics_->CountQuery(Rpc::kGetEdgeModel, absl::StatusCode::kCancelled);
      common::tsan::Release(this);
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "the client went away during GetEdgeModel"));
      return;
    }
    metrics_->AddEdgeModelBytes(static_cast<int64_t>(chunk_.data().size()));
    if (next_ == slices_.size()) {
      metrics_->CountQuery(Rpc::kGetEdgeModel, absl::StatusCode::kOk);
      metrics_->ObserveStage(Rpc::kGetEdgeModel, Stage::kTotal,
                             absl::ToDoubleSeconds(absl::Now() - start_));
      common::tsan::Release(this);
      Finish(grpc::Status::OK);
      return;
    }
    const Slice& slice = slices_[next_++];
    const EdgePart::File& f = part_->files[slice.file];
    chunk_.Clear();
    chunk_.set_file(f.name);
    chunk_.set_offset(static_cast<int64_t>(slice.offset));
    chunk_.set_data(f.bytes.data() + slice.offset, slice.size);
    Write();
  }

  void OnDone() override {
    common::tsan::Acquire(this);
    delete this;
  }

 private:
  void Write() {
    const grpc::Status s = common::SerializeMessage(chunk_, &bytes_);
    common::tsan::Release(this);
    if (!s.ok()) {
      Finish(s);
      return;
    }
    StartWrite(&bytes_);
  }

  const std::shared_ptr<const EdgePart> part_;
  CloudMetrics* const metrics_;
  const absl::Time start_;
  struct Slice {
    size_t file, offset, size;
  };
  std::vector<Slice> slices_;  // every file at least once (empty ones too)
  size_t next_ = 0;
  duet::v1::EdgeModelChunk chunk_;
  grpc::ByteBuffer bytes_;  // chunk_, serialized
};

class FailedWriter final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit FailedWriter(const grpc::Status& status) {
    common::tsan::Release(this);
    Finish(status);
  }
  void OnDone() override {
    common::tsan::Acquire(this);
    delete this;
  }
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* ScoringServiceImpl::GetEdgeModel(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
  (void)context;
  duet::v1::GetEdgeModelRequest parsed;
  if (grpc::Status s = common::ParseMessage(*bytes, &parsed); !s.ok()) {
    core_->metrics().CountQuery(Rpc::kGetEdgeModel,
                                absl::StatusCode::kInvalidArgument);
    return new FailedWriter(s);
  }
  const duet::v1::GetEdgeModelRequest* request = &parsed;
  uint32_t version = request->model_version();
  uint64_t fingerprint = request->model_fingerprint();
  if (version == 0) {
    // The device's target under the release policy.
    std::optional<duet::v1::ModelTarget> target =
        core_->TargetFor(request->device_id());
    if (!target.has_value()) {
      const absl::Status s = absl::FailedPreconditionError(absl::StrCat(
          "no version to announce to device '", request->device_id(),
          "': the release policy (", core_->release_policy()->Describe(),
          ") names a version that is not served; serving ",
          core_->served().Describe()));
      core_->metrics().CountQuery(Rpc::kGetEdgeModel, s.code());
      return new FailedWriter(common::ToGrpcStatus(s));
    }
    version = target->version();
    fingerprint = target->fingerprint();
  }
  absl::StatusOr<std::shared_ptr<const EdgePart>> part =
      core_->served().EdgePartOf(version, fingerprint);
  if (!part.ok()) {
    core_->metrics().CountQuery(Rpc::kGetEdgeModel, part.status().code());
    return new FailedWriter(common::ToGrpcStatus(part.status()));
  }
  return new EdgeModelWriter(*std::move(part), &core_->metrics());
}

grpc::ServerUnaryReactor* ScoringServiceImpl::GetModelStatus(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes,
    grpc::ByteBuffer* out) {
  (void)context;
  auto* call = new common::UnaryCall<duet::v1::GetModelStatusRequest,
                                     duet::v1::ModelStatus>(bytes, out);
  if (!Parsed(Rpc::kGetModelStatus, *call)) return call->HandOff();
  const duet::v1::GetModelStatusRequest* request = &call->request();
  duet::v1::ModelStatus* response = call->response();
  const absl::Time now = absl::Now();
  response->set_model_name(core_->runtime()->model().config().name());
  for (const ServedModels::Info& v : core_->served().List()) {
    duet::v1::ServedVersion* out = response->add_versions();
    out->set_version(v.version);
    out->set_signature(v.signature);
    out->set_state(ServedStateName(v.state));
    out->set_queries_total(v.queries);
    out->set_idle_ms(absl::ToInt64Milliseconds(now - v.last_used));
    out->set_edge_bytes(v.edge_bytes);
    out->set_loaded_unix_ms(absl::ToUnixMillis(v.loaded));
  }
  if (std::optional<duet::v1::ModelTarget> target =
          core_->TargetFor(request->device_id())) {
    *response->mutable_target() = *target;
  }
  response->set_release(core_->release_policy()->Describe());
  core_->metrics().CountQuery(Rpc::kGetModelStatus, absl::StatusCode::kOk);
  call->Reply(grpc::Status::OK);
  return call->HandOff();
}

}  // namespace duet::cloud
