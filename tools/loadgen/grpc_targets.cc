#include "tools/loadgen/grpc_targets.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "common/base/mutex.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "duet/v1/edge.grpc.pb.h"
#include "duet/v1/scoring.grpc.pb.h"

namespace duet::loadgen {
namespace {

using duet::v1::ModelConfig;

std::vector<float> UniformFeatures(int n, Rng& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

int MaxHistory(const ModelConfig& config) {
  int h = 0;
  for (const auto& t : config.user_tables())
    h = std::max(h, t.history_length());
  return h;
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + d));
}

template <typename Response>
QueryResult Finish(const grpc::Status& status, int64_t bytes_up,
                   const Response& response) {
  QueryResult r;
  r.code = CodeOf(status);
  r.bytes_up = bytes_up;
  if (!status.ok()) {
    r.message = status.error_message();
    return r;
  }
  r.bytes_down = static_cast<int64_t>(response.ByteSizeLong());
  r.items.reserve(response.items_size());
  for (const auto& item : response.items()) r.items.push_back(item.item_id());
  return r;
}

class EdgeTarget : public Target {
 public:
  EdgeTarget(const TargetOptions& o, const Channels& channels)
      : dynamic_in_(common::ComputeDims(o.config).dynamic_in) {
    for (auto& ch : channels) {
      stubs_.push_back(duet::v1::EdgeService::NewStub(ch));
    }
  }

  QueryResult Query(const QuerySpec& q, Rng& rng) override {
    duet::v1::RecommendRequest request;
    const std::vector<float> c = UniformFeatures(dynamic_in_, rng);
    request.mutable_context_features()->Add(c.begin(), c.end());
    request.mutable_candidate_ids()->Add(q.candidates.begin(),
                                         q.candidates.end());
    request.set_top_k(q.top_k);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, q.deadline);
    duet::v1::RecommendResponse response;
    const grpc::Status s = Stub(q.user).Recommend(&ctx, request, &response);
    return Finish(s, static_cast<int64_t>(request.ByteSizeLong()), response);
  }

  absl::Status Interact(int user, int64_t item,
                        absl::Duration deadline) override {
    duet::v1::RecordInteractionRequest request;
    request.set_item_id(item);
    duet::v1::RecordInteractionResponse response;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, deadline);
    const grpc::Status s =
        Stub(user).RecordInteraction(&ctx, request, &response);
    return absl::Status(CodeOf(s), s.error_message());
  }

 private:
  duet::v1::EdgeService::Stub& Stub(int user) {
    return *stubs_[user % stubs_.size()];
  }
  const int dynamic_in_;
  std::vector<std::unique_ptr<duet::v1::EdgeService::Stub>> stubs_;
};

// Each simulated user keeps a profile s and a history of item ids of the
// model's longest history length, oldest first, as a server-side DLRM
// receives them.
class MonolithicTarget : public Target {
 public:
  MonolithicTarget(const TargetOptions& o, const Channels& channels)
      : dims_(common::ComputeDims(o.config)),
        max_history_(MaxHistory(o.config)),
        users_(std::max(o.devices, 1)) {
    for (auto& ch : channels) {
      stubs_.push_back(duet::v1::ScoringService::NewStub(ch));
    }
    Rng rng(o.seed ^ 0x4D4F4E4FULL);
    const CandidateSampler history(o.config.catalog().num_items(), o.zipf,
                                   o.seed);
    for (User& u : users_) {
      u.static_features = UniformFeatures(dims_.static_in, rng);
      for (int i = 0; i < max_history_; ++i) {
        u.history.push_back(history.SampleOne(rng));
      }
    }
  }

  QueryResult Query(const QuerySpec& q, Rng& rng) override {
    duet::v1::MonolithicScoreRequest request;
    User& u = users_[q.user % users_.size()];
    {
      common::MutexLock lock(&u.mu);
      request.mutable_static_features()->Add(u.static_features.begin(),
                                             u.static_features.end());
      request.mutable_history_item_ids()->Add(u.history.begin(),
                                              u.history.end());
    }
    const std::vector<float> c = UniformFeatures(dims_.dynamic_in, rng);
    request.mutable_dynamic_features()->Add(c.begin(), c.end());
    request.mutable_candidate_ids()->Add(q.candidates.begin(),
                                         q.candidates.end());
    request.set_top_k(q.top_k);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, q.deadline);
    duet::v1::ScoreResponse response;
    const grpc::Status s = stubs_[q.user % stubs_.size()]->MonolithicScore(
        &ctx, request, &response);
    return Finish(s, static_cast<int64_t>(request.ByteSizeLong()), response);
  }

  absl::Status Interact(int user, int64_t item, absl::Duration) override {
    User& u = users_[user % users_.size()];
    common::MutexLock lock(&u.mu);
    u.history.push_back(item);
    while (static_cast<int>(u.history.size()) > max_history_) {
      u.history.pop_front();
    }
    return absl::OkStatus();
  }

 private:
  struct User {
    common::Mutex mu;
    std::vector<float> static_features;
    std::deque<int64_t> history ABSL_GUARDED_BY(mu);
  };
  const common::ModelDims dims_;
  const int max_history_;
  std::vector<User> users_;
  std::vector<std::unique_ptr<duet::v1::ScoringService::Stub>> stubs_;
};

class ScoreTarget : public Target {
 public:
  ScoreTarget(const TargetOptions& o, const Channels& channels) {
    for (auto& ch : channels) {
      stubs_.push_back(duet::v1::ScoringService::NewStub(ch));
    }
    Rng rng(o.seed ^ 0x53434F52ULL);
    for (int i = 0; i < std::max(o.devices, 1); ++i) {
      vectors_.push_back(SyntheticUserVector(o.config, rng));
    }
  }

  QueryResult Query(const QuerySpec& q, Rng&) override {
    duet::v1::ScoreRequest request;
    request.mutable_candidate_ids()->Add(q.candidates.begin(),
                                         q.candidates.end());
    request.set_top_k(q.top_k);
    *request.mutable_user_vector() = vectors_[q.user % vectors_.size()];
    grpc::ClientContext ctx;
    SetDeadline(&ctx, q.deadline);
    duet::v1::ScoreResponse response;
    const grpc::Status s =
        stubs_[q.user % stubs_.size()]->Score(&ctx, request, &response);
    return Finish(s, static_cast<int64_t>(request.ByteSizeLong()), response);
  }

  absl::Status Interact(int, int64_t, absl::Duration) override {
    return absl::OkStatus();
  }

 private:
  std::vector<duet::v1::UserVector> vectors_;
  std::vector<std::unique_ptr<duet::v1::ScoringService::Stub>> stubs_;
};

}  // namespace

absl::StatusOr<Channels> MakeChannels(const std::string& addr, int count,
                                      const common::ClientTlsOptions& tls) {
  Channels out;
  for (int i = 0; i < std::max(count, 1); ++i) {
    grpc::ChannelArguments args;
    // Without a local pool, channels with equal arguments share one
    // connection; the index keeps them apart.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("duet.loadgen.channel", i);
    ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                     common::MakeChannelCredentials(tls, &args));
    out.push_back(grpc::CreateCustomChannel(addr, credentials, args));
  }
  return out;
}

duet::v1::UserVector SyntheticUserVector(const ModelConfig& config, Rng& rng) {
  const int n = common::ComputeDims(config).user_out;
  std::string data(n, '\0');
  std::uniform_int_distribution<int> byte(-128, 127);
  for (char& c : data) c = static_cast<char>(byte(rng));
  duet::v1::UserVector v;
  v.set_int8_data(data);
  v.set_scale(0.02f);
  v.set_zero_point(0);
  v.set_model_version(config.version());
  v.set_model_fingerprint(common::Fingerprint(config));
  return v;
}

std::string GrpcFrame(const google::protobuf::Message& message) {
  const std::string body = message.SerializeAsString();
  const uint32_t n = static_cast<uint32_t>(body.size());
  std::string out(5, '\0');
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  return out + body;
}

absl::StatusOr<std::unique_ptr<Target>> CreateEdgeTarget(
    const TargetOptions& options) {
  ASSIGN_OR_RETURN(Channels channels,
                   MakeChannels(options.addr, options.channels, options.tls));
  return std::make_unique<EdgeTarget>(options, channels);
}

absl::StatusOr<std::unique_ptr<Target>> CreateMonolithicTarget(
    const TargetOptions& options) {
  ASSIGN_OR_RETURN(Channels channels,
                   MakeChannels(options.addr, options.channels, options.tls));
  return std::make_unique<MonolithicTarget>(options, channels);
}

absl::StatusOr<std::unique_ptr<Target>> CreateScoreTarget(
    const TargetOptions& options) {
  ASSIGN_OR_RETURN(Channels channels,
                   MakeChannels(options.addr, options.channels, options.tls));
  return std::make_unique<ScoreTarget>(options, channels);
}

}  // namespace duet::loadgen
