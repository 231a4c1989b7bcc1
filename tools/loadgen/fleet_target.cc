#include "tools/loadgen/fleet_target.h"

#include <time.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/obs/energy_meter.h"
#include "edge/grpc_cloud_client.h"
#include "edge/recommender.h"
#include "edge/user_model.h"
#include "edge/user_state.h"
#include "tools/loadgen/fleet_release.h"

namespace duet::loadgen {
namespace {

// Distinct items whose rows fill the devices' scratchpads at start.
constexpr int kHistoryPoolItems = 1024;
constexpr int kFetchBatch = 128;

// Payload bytes of the query running on this thread: Recommender runs a
// query start to end on its caller's thread, so the counting client can
// attribute the Scores it hands back.
thread_local int64_t scores_bytes = 0;

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// Forwards to the real client and counts the bytes of each Scores.
class CountingCloudClient : public edge::CloudClient {
 public:
  explicit CountingCloudClient(std::unique_ptr<edge::CloudClient> inner)
      : inner_(std::move(inner)) {}

  absl::StatusOr<std::unique_ptr<edge::CloudQuery>> BeginQuery(
      duet::v1::BeginQuery begin, absl::Time deadline) override {
    auto q = inner_->BeginQuery(std::move(begin), deadline);
    if (!q.ok()) return q.status();
    return std::unique_ptr<edge::CloudQuery>(new Query(std::move(*q)));
  }
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> GetItemEmbeddings(
      const duet::v1::GetItemEmbeddingsRequest& request,
      absl::Time deadline) override {
    return inner_->GetItemEmbeddings(request, deadline);
  }
  absl::Status GetEdgeModel(const duet::v1::GetEdgeModelRequest& request,
                            absl::Time deadline,
                            const EdgeModelChunkFn& on_chunk,
                            edge::CallCanceller* canceller) override {
    return inner_->GetEdgeModel(request, deadline, on_chunk, canceller);
  }
  absl::StatusOr<duet::v1::ModelStatus> GetModelStatus(
      const duet::v1::GetModelStatusRequest& request,
      absl::Time deadline) override {
    return inner_->GetModelStatus(request, deadline);
  }
  std::string ConnectionState() const override {
    return inner_->ConnectionState();
  }

 private:
  class Query : public edge::CloudQuery {
   public:
    explicit Query(std::unique_ptr<edge::CloudQuery> inner)
        : inner_(std::move(inner)) {}
    uint64_t id() const override { return inner_->id(); }
    absl::Status SendUserVector(const duet::v1::UserVector& v) override {
      return inner_->SendUserVector(v);
    }
    absl::StatusOr<duet::v1::Scores> Await(absl::Time deadline) override {
      auto scores = inner_->Await(deadline);
      if (scores.ok()) {
        scores_bytes += static_cast<int64_t>(scores->ByteSizeLong());
      }
      return scores;
    }

   private:
    std::unique_ptr<edge::CloudQuery> inner_;
  };
  std::unique_ptr<edge::CloudClient> inner_;
};

class FleetTarget : public Target {
 public:
  FleetTarget(const TargetOptions& o, const common::Model* model,
              std::unique_ptr<edge::UserModel> user_model)
      : options_(o), model_(model) {
    auto initial = std::make_shared<FleetModel>();
    initial->model = model;
    initial->user_model = std::move(user_model);
    initial_ = std::move(initial);
  }

  absl::Status Setup() {
    for (int i = 0; i < std::max(options_.streams, 1); ++i) {
      edge::GrpcCloudClient::Options co;
      co.target = options_.addr;
      co.tls = options_.tls;
      auto client = edge::GrpcCloudClient::Create(co);
      if (!client.ok()) return client.status();
      if (!(*client)->WaitUntilReady(absl::Seconds(10))) {
        return absl::UnavailableError(absl::StrCat(
            "no ScoringSession stream to ", options_.addr, " within 10 s"));
      }
      clouds_.push_back(
          std::make_unique<CountingCloudClient>(std::move(*client)));
    }

    Rng rng(options_.seed ^ 0xF1EE7ULL);
    const CandidateSampler sampler(model_->catalog().num_items(), options_.zipf,
                                   options_.seed);
    std::vector<int64_t> items;
    sampler.Sample(static_cast<int>(std::min<int64_t>(
                       kHistoryPoolItems, model_->catalog().num_items())),
                   rng, &items);
    // (item id, its rows): the durable history is the items, so a new
    // version's rows can be fetched for them.
    std::vector<std::pair<int64_t, std::vector<float>>> pool;
    // Halve the batch when the cloud caps ids per request (--max_candidates).
    size_t batch_size = kFetchBatch;
    for (size_t i = 0; i < items.size();) {
      const std::vector<int64_t> batch(
          items.begin() + i,
          items.begin() + std::min(items.size(), i + batch_size));
      duet::v1::GetItemEmbeddingsRequest get;
      get.mutable_item_ids()->Assign(batch.begin(), batch.end());
      get.set_model_version(model_->config().version());
      get.set_model_fingerprint(model_->fingerprint());
      auto rows =
          clouds_[0]->GetItemEmbeddings(get, absl::Now() + absl::Seconds(30));
      if (rows.status().code() == absl::StatusCode::kInvalidArgument &&
          batch_size > 1) {
        batch_size /= 2;
        continue;
      }
      if (!rows.ok()) {
        return absl::Status(
            rows.status().code(),
            absl::StrCat("fetching history rows: ", rows.status().message()));
      }
      for (const auto& e : rows->items()) {
        pool.emplace_back(e.item_id(),
                          std::vector<float>(e.rows().begin(), e.rows().end()));
      }
      i += batch.size();
    }
    if (pool.empty()) return absl::InternalError("no history rows fetched");

    int max_history = 0;
    for (const auto& t : model_->config().user_tables()) {
      max_history = std::max(max_history, t.history_length());
    }
    std::uniform_real_distribution<float> u01(0.0f, 1.0f);
    std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
    edge::Recommender::Options ro;
    // The cloud's --max_candidates decides, as for every other target.
    ro.max_candidates = 1 << 20;
    ro.relay_cache_items = options_.relay_top > 0 ? 256 : 0;
    FleetRelease::Options fo;
    fo.cloud = clouds_[0].get();
    fo.recommender = ro;
    release_ = std::make_unique<FleetRelease>(fo);
    for (int d = 0; d < std::max(options_.devices, 1); ++d) {
      edge::UserState::Options so;
      // Profiles are set synchronously below; nothing is ever scheduled.
      so.executor = [](std::function<void()> f) { f(); };
      auto state = edge::UserState::Create(model_, std::move(so));
      if (!state.ok()) return state.status();
      std::vector<float> s(model_->dims().static_in);
      for (float& x : s) x = u01(rng);
      if (absl::Status st = (*state)->ReplayProfile(s, 1); !st.ok()) return st;
      for (int h = 0; h < max_history; ++h) {
        const auto& [item, rows] = pool[pick(rng)];
        if (absl::Status st = (*state)->ValidateInteractionRows(rows);
            !st.ok()) {
          return st;
        }
        (*state)->PushInteraction(item, rows);
      }
      auto device = std::make_unique<FleetDevice>();
      device->id = absl::StrCat("fleet-", d);
      device->cloud = clouds_[d % clouds_.size()].get();
      auto runtime = std::make_shared<FleetDevice::Runtime>();
      runtime->version = initial_;
      runtime->state = std::move(*state);
      runtime->recommender = release_->MakeRecommender(device.get(), *initial_,
                                                       runtime->state.get());
      {
        common::MutexLock lock(&device->mu);
        device->current = std::move(runtime);
      }
      devices_.push_back(std::move(device));
    }
    release_->Start();
    return absl::OkStatus();
  }

  QueryResult Query(const QuerySpec& q, Rng& rng) override {
    FleetDevice& device = *devices_[q.user % devices_.size()];
    duet::v1::RecommendRequest request;
    std::uniform_real_distribution<float> u01(0.0f, 1.0f);
    for (int i = 0; i < model_->dims().dynamic_in; ++i) {
      request.add_context_features(u01(rng));
    }
    request.mutable_candidate_ids()->Add(q.candidates.begin(),
                                         q.candidates.end());
    request.set_top_k(q.top_k);
    scores_bytes = 0;
    // The device's CPU for the query: BeginQuery, user model, UserVector,
    // reading the Scores (the wait itself uses none).
    const double cpu_start = ThreadCpuSeconds();
    // The runtime it starts on answers it, even if the device switches
    // versions meanwhile.
    const std::shared_ptr<FleetDevice::Runtime> runtime = device.runtime();
    auto response =
        runtime->recommender->Recommend(request, absl::Now() + q.deadline);
    const double cpu_seconds = ThreadCpuSeconds() - cpu_start;
    QueryResult r;
    r.code = response.status().code();
    if (!response.ok()) {
      r.message = std::string(response.status().message());
      return r;
    }
    r.bytes_up = response->timings().uplink_bytes();
    r.bytes_down = scores_bytes;
    r.edge_joules = cpu_seconds * device_profile_.watts_per_busy_core;
    for (const auto& item : response->items())
      r.items.push_back(item.item_id());
    return r;
  }

  absl::Status Interact(int user, int64_t item,
                        absl::Duration deadline) override {
    FleetDevice& device = *devices_[user % devices_.size()];
    duet::v1::RecordInteractionRequest request;
    request.set_item_id(item);
    // Not while the device swaps its state (the switch would miss it).
    common::MutexLock writes(&device.write_mu);
    return device.runtime()
        ->recommender->RecordInteraction(request, absl::Now() + deadline)
        .status();
  }

  std::optional<ModelSwitches> model_switches() const override {
    return release_->switches();
  }

 private:
  const TargetOptions options_;
  const common::DeviceProfile device_profile_ = common::PhoneProfile();
  const common::Model* model_;
  std::shared_ptr<const FleetModel> initial_;
  std::vector<std::unique_ptr<edge::CloudClient>> clouds_;
  std::vector<std::unique_ptr<FleetDevice>> devices_;
  // Destroyed first: its thread switches the devices.
  std::unique_ptr<FleetRelease> release_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Target>> CreateFleetTarget(
    const TargetOptions& options, const common::Model* model) {
  edge::UserModel::Options mo;  // int8 user top MLP and wire: as duet-edge
  auto user_model = edge::UserModel::Create(model, mo);
  if (!user_model.ok()) return user_model.status();
  auto target =
      std::make_unique<FleetTarget>(options, model, std::move(*user_model));
  if (absl::Status s = target->Setup(); !s.ok()) return s;
  return std::unique_ptr<Target>(std::move(target));
}

}  // namespace duet::loadgen
