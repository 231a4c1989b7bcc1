// ScoringServiceImpl: the gRPC callback-API adapter (raw bytes) of
// duet.v1.ScoringService onto ScoringCore. Every answer to a query carries the
// device's target version (the release policy's; ModelTarget) when there is
// one. Holds no query state of its own: a ScoringSession stream lives in a
// reactor that owns a SessionMultiplexer; unary RPCs hand their request to the
// core and finish from the core's completion callback. No compute runs on gRPC
// threads. Thread-safe; borrows the core.
#ifndef DUET_CLOUD_SCORING_SERVICE_IMPL_H_
#define DUET_CLOUD_SCORING_SERVICE_IMPL_H_

#include "cloud/scoring_core.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace duet::cloud {

// Every method is served over raw bytes and parses its own request
// (common/rpc/message_bytes.h): bytes that do not parse get INVALID_ARGUMENT
// naming the message type, and a stream never ends OK after one.
using RawScoringService =
    duet::v1::ScoringService::WithRawCallbackMethod_ScoringSession<
        duet::v1::ScoringService::WithRawCallbackMethod_Score<
            duet::v1::ScoringService::WithRawCallbackMethod_MonolithicScore<
                duet::v1::ScoringService::
                    WithRawCallbackMethod_GetItemEmbeddings<
                        duet::v1::ScoringService::
                            WithRawCallbackMethod_GetEdgeModel<
                                duet::v1::ScoringService::
                                    WithRawCallbackMethod_GetModelStatus<
                                        duet::v1::ScoringService::Service>>>>>>;

class ScoringServiceImpl final : public RawScoringService {
 public:
  explicit ScoringServiceImpl(ScoringCore* core) : core_(core) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ScoringSession(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* MonolithicScore(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetItemEmbeddings(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  // Model releases (release_rpcs.cc).
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetEdgeModel(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* GetModelStatus(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;

 private:
  // Whether a unary call's request parsed; counts it in the query metrics
  // (INVALID_ARGUMENT) when it did not (the call is then already finished).
  template <typename Call>
  bool Parsed(Rpc rpc, const Call& call) {
    if (call.parsed()) return true;
    core_->metrics().CountQuery(rpc, absl::StatusCode::kInvalidArgument);
    return false;
  }

  ScoringCore* const core_;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_SCORING_SERVICE_IMPL_H_
