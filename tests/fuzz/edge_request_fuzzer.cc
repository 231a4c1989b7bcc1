// libFuzzer target: arbitrary bytes as requests to duet-edge's handlers, run
// in process on a Recommender built once over a generated tiny model, with
// the in-process FakeCloud (edge/internal/fake_cloud.h) and a StateStore in
// a temporary directory (under /dev/shm when present: every interaction is
// fsynced). The first byte picks the RPC (mod 3); the rest is parsed as its
// request proto (bytes that do not parse are skipped):
//   0: Recommend (RecommendRequest),
//   1: RecordInteraction (RecordInteractionRequest),
//   2: UpdateProfile (UpdateProfileRequest).
// Every request must end with OK or INVALID_ARGUMENT with a message (the
// fake cloud never fails), and every success must be sane: top_k items,
// each a candidate, CTRs finite in [0, 1]; the interaction sequence counts
// up by one (a repeated interaction_id: answered `duplicate` with an earlier
// sequence, nothing applied); the profile version counts up by one.
// Seeds (tests/fuzz/corpus/edge_request/): selector byte + a request
// written as a text proto and encoded with `protoc --encode`.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "common/model/model.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"
#include "edge/internal/fake_cloud.h"
#include "edge/recommender.h"
#include "edge/state_store.h"
#include "edge/user_model.h"
#include "edge/user_state.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using duet::edge::Recommender;

constexpr int kMaxCandidates = 64;

void CheckInvalidArgument(const absl::Status& s) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument &&
             !s.message().empty());
}

struct Edge {
  std::unique_ptr<duet::common::Model> model;
  std::unique_ptr<duet::edge::internal::FakeCloud> cloud;
  std::unique_ptr<duet::edge::UserModel> user_model;
  std::unique_ptr<duet::edge::UserState> state;
  std::unique_ptr<duet::edge::StateStore> store;
  std::unique_ptr<Recommender> recommender;
};

std::string ScratchDir(const std::string& name) {
  const std::string base =
      std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  return base + "/duet_edge_request_fuzz_" + std::to_string(::getpid()) + "_" +
         name;
}

// Built on the first call.
Edge& TheEdge() {
  static Edge* edge = [] {
    auto* e = new Edge;
    const std::string model_dir = ScratchDir("model");
    auto config = duet::common::PresetConfig("tiny", 1.0);
    FUZZ_CHECK(config.ok());
    duet::common::GenerateOptions go;
    go.out_dir = model_dir;
    go.calibration_samples = 64;
    FUZZ_CHECK(duet::common::GenerateModel(*config, go, nullptr).ok());
    duet::common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = duet::common::Model::Load(model_dir, lo);
    FUZZ_CHECK(model.ok());
    e->model = *std::move(model);
    // The mapped files stay valid after the directory is gone.
    std::error_code ignored;
    std::filesystem::remove_all(model_dir, ignored);

    e->cloud =
        std::make_unique<duet::edge::internal::FakeCloud>(e->model.get());
    auto user_model =
        duet::edge::UserModel::Create(e->model.get(), {});  // int8
    FUZZ_CHECK(user_model.ok());
    e->user_model = *std::move(user_model);
    duet::edge::UserState::Options so;
    so.executor = [](std::function<void()> fn) { fn(); };
    auto state = duet::edge::UserState::Create(e->model.get(), std::move(so));
    FUZZ_CHECK(state.ok());
    e->state = *std::move(state);
    duet::edge::StateStore::Options store;
    store.dir = ScratchDir("state");
    store.reset = true;
    store.snapshot_every = 64;
    auto opened =
        duet::edge::StateStore::Open(store, *e->model, e->state.get());
    FUZZ_CHECK(opened.ok());
    e->store = *std::move(opened);
    Recommender::Hooks hooks;
    hooks.store = e->store.get();
    Recommender::Options ro;
    ro.max_candidates = kMaxCandidates;
    ro.relay_cache_items = 16;
    e->recommender = std::make_unique<Recommender>(
        e->user_model.get(), e->cloud.get(), e->state.get(), hooks, ro);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchDir("state"), ignored);
    });
    return e;
  }();
  return *edge;
}

absl::Time Deadline() { return absl::Now() + absl::Seconds(5); }

void RunRecommend(Edge& e, const uint8_t* data, size_t size) {
  duet::v1::RecommendRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  auto result = e.recommender->Recommend(request, Deadline());
  if (!result.ok()) {
    CheckInvalidArgument(result.status());
    return;
  }
  FUZZ_CHECK(result->items_size() == request.top_k());
  const absl::flat_hash_set<int64_t> candidates(request.candidate_ids().begin(),
                                                request.candidate_ids().end());
  for (const auto& item : result->items()) {
    FUZZ_CHECK(candidates.contains(item.item_id()));
    FUZZ_CHECK(std::isfinite(item.ctr()) && item.ctr() >= 0 && item.ctr() <= 1);
  }
}

void RunRecordInteraction(Edge& e, const uint8_t* data, size_t size) {
  duet::v1::RecordInteractionRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  const uint64_t before = e.state->Info().interactions_total;
  auto result = e.recommender->RecordInteraction(request, Deadline());
  if (!result.ok()) {
    CheckInvalidArgument(result.status());
    FUZZ_CHECK(e.state->Info().interactions_total == before);
    return;
  }
  if (result->duplicate()) {
    // A repeated interaction_id: answered with the first call's sequence,
    // nothing applied.
    FUZZ_CHECK(!request.interaction_id().empty());
    FUZZ_CHECK(result->sequence() >= 1 && result->sequence() <= before);
    FUZZ_CHECK(e.state->Info().interactions_total == before);
    return;
  }
  FUZZ_CHECK(result->sequence() == before + 1);
}

void RunUpdateProfile(Edge& e, const uint8_t* data, size_t size) {
  duet::v1::UpdateProfileRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  const uint64_t before = e.state->profile_version();
  auto result = e.recommender->UpdateProfile(request);
  if (!result.ok()) {
    CheckInvalidArgument(result.status());
    FUZZ_CHECK(e.state->profile_version() == before);
    return;
  }
  FUZZ_CHECK(result->profile_version() == before + 1);
  // The inline executor recomputed the memo already.
  FUZZ_CHECK(e.state->memo().Current()->version == before + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Edge& e = TheEdge();
  switch (data[0] % 3) {
    case 0:
      RunRecommend(e, data + 1, size - 1);
      break;
    case 1:
      RunRecordInteraction(e, data + 1, size - 1);
      break;
    case 2:
      RunUpdateProfile(e, data + 1, size - 1);
      break;
  }
  return 0;
}
