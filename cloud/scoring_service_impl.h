// ScoringServiceImpl: the gRPC callback-API adapter of duet.v1.ScoringService
// onto ScoringCore. Every answer to a query carries the device's target
// version (the release policy's; ModelTarget) when there is one. Holds no query
// state of its own: a ScoringSession stream lives in a reactor that owns a
// SessionMultiplexer; unary RPCs hand their request to the core and finish from
// the core's completion callback. No compute runs on gRPC threads. Thread-safe;
// borrows the core.
#ifndef DUET_CLOUD_SCORING_SERVICE_IMPL_H_
#define DUET_CLOUD_SCORING_SERVICE_IMPL_H_

#include "cloud/scoring_core.h"
#include "duet/v1/scoring.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace duet::cloud {

class ScoringServiceImpl final
    : public duet::v1::ScoringService::CallbackService {
 public:
  explicit ScoringServiceImpl(ScoringCore* core) : core_(core) {}

  grpc::ServerBidiReactor<duet::v1::SessionRequest, duet::v1::SessionResponse>*
  ScoringSession(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const duet::v1::ScoreRequest* request,
                                  duet::v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* MonolithicScore(
      grpc::CallbackServerContext* context,
      const duet::v1::MonolithicScoreRequest* request,
      duet::v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* GetItemEmbeddings(
      grpc::CallbackServerContext* context,
      const duet::v1::GetItemEmbeddingsRequest* request,
      duet::v1::GetItemEmbeddingsResponse* response) override;
  // Model releases (release_rpcs.cc).
  grpc::ServerWriteReactor<duet::v1::EdgeModelChunk>* GetEdgeModel(
      grpc::CallbackServerContext* context,
      const duet::v1::GetEdgeModelRequest* request) override;
  grpc::ServerUnaryReactor* GetModelStatus(
      grpc::CallbackServerContext* context,
      const duet::v1::GetModelStatusRequest* request,
      duet::v1::ModelStatus* response) override;

 private:
  ScoringCore* const core_;
};

}  // namespace duet::cloud

#endif  // DUET_CLOUD_SCORING_SERVICE_IMPL_H_
