// The side RPCs of the scoring service: MonolithicScore (the baseline the
// split is measured against) and GetItemEmbeddings (user-table rows for
// interactions the relay did not cover). They share the core's pool,
// admission and metrics, and end through one helper.
#include <atomic>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cloud/scoring_core.h"
#include "common/base/status_macros.h"
#include "common/kernels/top_k.h"
#include "common/model/reference_model.h"
#include "common/model/request_checks.h"
#include "common/obs/cpu_account.h"
#include "common/obs/energy_meter.h"

namespace duet::cloud {
namespace {
int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }
}  // namespace

template <typename Response>
void ScoringCore::Reject(
    Rpc rpc, absl::Status status,
    const std::function<void(absl::StatusOr<Response>)>& done) {
  metrics_->CountQuery(rpc, status.code());
  done(std::move(status));
}

template <typename Response>
void ScoringCore::RunSideRpc(
    Rpc rpc, absl::Time deadline,
    std::function<absl::StatusOr<Response>(absl::Time start, absl::Time pick)>
        work,
    std::function<void(absl::StatusOr<Response>)> done) {
  if (absl::Status s = Admit(rpc); !s.ok()) return done(std::move(s));
  const absl::Time start = clock_->Now();
  pool_->Schedule([this, rpc, start, deadline, work = std::move(work),
                   done = std::move(done)]() {
    const absl::Time pick = clock_->Now();
    absl::StatusOr<Response> result =
        pick > deadline ? absl::StatusOr<Response>(absl::DeadlineExceededError(
                              absl::StrCat(RpcName(rpc),
                                           " deadline passed before a worker "
                                           "picked it up")))
                        : work(start, pick);
    metrics_->CountQuery(
        rpc, result.ok() ? absl::StatusCode::kOk : result.status().code());
    Release();  // before the reply, as in Finish
    done(std::move(result));
  });
}

void ScoringCore::MonolithicScore(
    const duet::v1::MonolithicScoreRequest& request, absl::Time deadline,
    MonolithicDone done) {
  constexpr Rpc rpc = Rpc::kMonolithicScore;
  // The newest version: raw user inputs fit every version.
  std::shared_ptr<ModelRuntime> rt = *served_->Route(0, 0, clock_->Now());
  if (rt->monolithic() == nullptr) {
    return Reject(rpc,
                  absl::FailedPreconditionError("MonolithicScore needs the "
                                                "edge and user-table parts of "
                                                "the model"),
                  done);
  }
  common::UserInputs user;
  user.static_features.assign(request.static_features().begin(),
                              request.static_features().end());
  user.dynamic_features.assign(request.dynamic_features().begin(),
                               request.dynamic_features().end());
  user.history.assign(request.history_item_ids().begin(),
                      request.history_item_ids().end());
  absl::Status valid = common::ValidateItemIds(
      rt->model().catalog(), request.candidate_ids(), options_.max_candidates);
  if (valid.ok()) {
    valid = common::ValidateTopK(request.top_k(), request.candidate_ids_size());
  }
  if (valid.ok()) valid = common::ValidateUserInputs(rt->model(), user);
  if (!valid.ok()) return Reject(rpc, std::move(valid), done);
  RunSideRpc<duet::v1::ScoreResponse>(
      rpc, deadline,
      [this, rt = std::move(rt), user = std::move(user),
       candidates = std::vector<int64_t>(request.candidate_ids().begin(),
                                         request.candidate_ids().end()),
       top_k = request.top_k()](absl::Time start, absl::Time pick)
          -> absl::StatusOr<duet::v1::ScoreResponse> {
        thread_local std::vector<float> ctr;
        if (ctr.size() < candidates.size()) ctr.resize(candidates.size());
        const int n = static_cast<int>(candidates.size());
        std::atomic<int64_t> cpu_ns{0};
        {
          common::ScopedCpuAccount cpu(&cpu_ns);
          RETURN_IF_ERROR(
              rt->monolithic()->Score(user, candidates, ctr.data()));
        }
        RETURN_IF_ERROR(
            common::CheckFiniteScores(candidates.data(), ctr.data(), n));
        if (options_.energy != nullptr) {
          options_.energy->ObserveQuery(cpu_ns.load() * 1e-9, 0);
        }
        duet::v1::ScoreResponse response;
        for (const common::Scored& x :
             common::TopK(candidates.data(), ctr.data(), n, top_k)) {
          duet::v1::ScoredItem* item = response.add_items();
          item->set_item_id(x.item_id);
          item->set_ctr(x.ctr);
        }
        const absl::Time end = clock_->Now();
        duet::v1::StageTimings* t = response.mutable_timings();
        t->set_queue_us(Micros(pick - start));
        t->set_item_model_us(Micros(end - pick));
        t->set_total_us(Micros(end - start));
        metrics_->ObserveStage(rpc, Stage::kQueue, t->queue_us() * 1e-6);
        metrics_->ObserveStage(rpc, Stage::kTotal, t->total_us() * 1e-6);
        metrics_->AddCandidates(n);
        return response;
      },
      std::move(done));
}

void ScoringCore::GetItemEmbeddings(
    const duet::v1::GetItemEmbeddingsRequest& request, absl::Time deadline,
    EmbeddingsDone done) {
  constexpr Rpc rpc = Rpc::kGetItemEmbeddings;
  absl::StatusOr<std::shared_ptr<ModelRuntime>> routed = served_->Route(
      request.model_version(), request.model_fingerprint(), clock_->Now());
  if (!routed.ok()) return Reject(rpc, routed.status(), done);
  std::shared_ptr<ModelRuntime> rt = *std::move(routed);
  if (!rt->model().has_user_tables()) {
    return Reject(rpc,
                  absl::FailedPreconditionError(
                      "GetItemEmbeddings needs the user tables, which this "
                      "server did not load"),
                  done);
  }
  if (absl::Status s =
          common::ValidateItemIds(rt->model().catalog(), request.item_ids(),
                                  options_.max_candidates, "item_ids");
      !s.ok()) {
    return Reject(rpc, std::move(s), done);
  }
  RunSideRpc<duet::v1::GetItemEmbeddingsResponse>(
      rpc, deadline,
      [this, rt = std::move(rt),
       ids = std::vector<int64_t>(request.item_ids().begin(),
                                  request.item_ids().end())](
          absl::Time start,
          absl::Time) -> absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> {
        duet::v1::GetItemEmbeddingsResponse response;
        FillRelay(rt->model(), ids.data(), static_cast<int>(ids.size()),
                  response.mutable_items());
        response.set_model_version(rt->model().config().version());
        response.set_model_fingerprint(rt->model().fingerprint());
        metrics_->ObserveStage(Rpc::kGetItemEmbeddings, Stage::kTotal,
                               absl::ToDoubleSeconds(clock_->Now() - start));
        return response;
      },
      std::move(done));
}

}  // namespace duet::cloud
