// libFuzzer target: arbitrary bytes as requests to duet-cloud's request
// handlers, run in process on a ScoringCore built once over a generated tiny
// model. The first byte picks the RPC (bits 0-1) and whether the harness
// stamps the serving model's version and fingerprint into the user vector
// (bit 2), so mutations reach the scoring path past the version check:
//   0: ScoringSession: the rest is a sequence of SessionRequests, each
//      prefixed by a one-byte length, fed to a SessionMultiplexer (so
//      out-of-order, duplicate and unknown-id messages are covered); what
//      is still open at the end is cancelled, as when a stream goes away;
//   1: Score (ScoreRequest), as ScoringServiceImpl::Score runs it;
//   2: MonolithicScore (MonolithicScoreRequest);
//   3: GetItemEmbeddings (GetItemEmbeddingsRequest).
// Bytes that do not parse are skipped. Every request must end with a status
// (never a crash or a hang), and every successful reply must be sane: CTRs
// finite in [0, 1], item ids in the catalog, the requested counts.
// Seeds (tests/fuzz/corpus/cloud_request/) were written as text protos and
// encoded with `protoc --encode`.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cloud/scoring_core.h"
#include "cloud/session_multiplexer.h"
#include "common/base/mutex.h"
#include "common/model/model.h"
#include "common/model/model_generator.h"
#include "common/model/presets.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using duet::cloud::ScoringCore;

constexpr int kMaxCandidates = 64;
constexpr absl::Duration kHang = absl::Seconds(20);

// The core, built on the first call over tiny generated into /tmp.
ScoringCore& Core() {
  static ScoringCore* core = [] {
    const std::string dir =
        "/tmp/duet_cloud_request_fuzz_" + std::to_string(::getpid());
    auto config = duet::common::PresetConfig("tiny", 1.0);
    FUZZ_CHECK(config.ok());
    duet::common::GenerateOptions go;
    go.out_dir = dir;
    go.calibration_samples = 64;
    FUZZ_CHECK(duet::common::GenerateModel(*config, go, nullptr).ok());
    duet::common::LoadOptions lo;
    lo.parts.user_tables = true;
    auto model = duet::common::Model::Load(dir, lo);
    FUZZ_CHECK(model.ok());
    duet::cloud::ScoringCoreOptions o;
    o.workers = 2;
    o.max_inflight = 64;
    o.max_candidates = kMaxCandidates;
    o.placement_sample_items = 200;
    o.item_cache_entries = 256;
    o.calibration_budget = absl::Milliseconds(50);
    auto created = ScoringCore::Create(*std::move(model), o);
    FUZZ_CHECK(created.ok());
    // The mapped files stay valid after the directory is gone.
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
    return created->release();
  }();
  return *core;
}

void Stamp(const ScoringCore& core, duet::v1::UserVector* uv) {
  uv->set_model_version(core.model().config().version());
  uv->set_model_fingerprint(core.model().fingerprint());
}

void CheckItems(
    const google::protobuf::RepeatedPtrField<duet::v1::ScoredItem>& items,
    int top_k) {
  const int64_t num_items = Core().model().catalog().num_items();
  FUZZ_CHECK(items.size() == top_k);
  for (const auto& item : items) {
    FUZZ_CHECK(std::isfinite(item.ctr()) && item.ctr() >= 0 && item.ctr() <= 1);
    FUZZ_CHECK(item.item_id() >= 0 && item.item_id() < num_items);
  }
}

void CheckError(const absl::Status& s) {
  FUZZ_CHECK(!s.ok() && !s.message().empty());
}

void RunSession(const uint8_t* data, size_t size, bool stamp) {
  ScoringCore& core = Core();
  duet::common::Mutex mu;
  std::vector<duet::v1::SessionResponse> responses;
  {
    duet::cloud::SessionMultiplexer mux(&core, absl::Now() + absl::Seconds(5),
                                        [&](duet::v1::SessionResponse r) {
                                          duet::common::MutexLock lock(&mu);
                                          responses.push_back(std::move(r));
                                        });
    std::vector<int> top_k;
    while (size > 0) {
      const size_t n = std::min<size_t>(data[0], size - 1);
      duet::v1::SessionRequest request;
      if (request.ParseFromArray(data + 1, static_cast<int>(n))) {
        if (stamp && request.has_user_vector()) {
          Stamp(core, request.mutable_user_vector());
        }
        mux.OnRequest(request);
      }
      data += n + 1;
      size -= n + 1;
    }
    mux.CancelAll();
    const absl::Time give_up = absl::Now() + kHang;
    while (mux.open_queries() > 0) {
      FUZZ_CHECK(absl::Now() < give_up);
      absl::SleepFor(absl::Microseconds(50));
    }
  }
  const int64_t num_items = core.model().catalog().num_items();
  duet::common::MutexLock lock(&mu);
  for (const auto& r : responses) {
    if (r.has_scores()) {
      for (const auto& item : r.scores().items()) {
        FUZZ_CHECK(std::isfinite(item.ctr()) && item.ctr() >= 0 &&
                   item.ctr() <= 1);
        FUZZ_CHECK(item.item_id() >= 0 && item.item_id() < num_items);
      }
      FUZZ_CHECK(r.scores().items_size() >= 1);
    } else {
      FUZZ_CHECK(r.has_error() && r.error().code() != 0 &&
                 !r.error().message().empty());
    }
  }
}

void RunScore(const uint8_t* data, size_t size, bool stamp) {
  ScoringCore& core = Core();
  duet::v1::ScoreRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  if (stamp) Stamp(core, request.mutable_user_vector());
  if (absl::Status s = core.ValidateUserVector(request.user_vector());
      !s.ok()) {
    CheckError(s);
    return;
  }
  duet::v1::BeginQuery begin;
  *begin.mutable_candidate_ids() = request.candidate_ids();
  begin.set_top_k(request.top_k());
  begin.set_relay_top(request.relay_top());
  duet::common::Notification done;
  absl::StatusOr<duet::v1::Scores> result;
  auto query = core.Begin(begin, absl::Now() + absl::Seconds(5),
                          duet::cloud::Rpc::kScore,
                          [&](absl::StatusOr<duet::v1::Scores> r) {
                            result = std::move(r);
                            done.Notify();
                          });
  if (!query.ok()) {
    CheckError(query.status());
    return;
  }
  core.ProvideUserVector(*query, request.user_vector());
  FUZZ_CHECK(done.WaitForNotificationWithTimeout(kHang));
  if (!result.ok()) {
    CheckError(result.status());
    return;
  }
  CheckItems(result->items(), request.top_k());
  FUZZ_CHECK(result->relay_size() ==
             std::min(request.relay_top(), request.top_k()));
}

void RunMonolithic(const uint8_t* data, size_t size) {
  duet::v1::MonolithicScoreRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  duet::common::Notification done;
  absl::StatusOr<duet::v1::ScoreResponse> result;
  Core().MonolithicScore(request, absl::Now() + absl::Seconds(5),
                         [&](absl::StatusOr<duet::v1::ScoreResponse> r) {
                           result = std::move(r);
                           done.Notify();
                         });
  FUZZ_CHECK(done.WaitForNotificationWithTimeout(kHang));
  if (!result.ok()) {
    CheckError(result.status());
    return;
  }
  CheckItems(result->items(), request.top_k());
}

void RunEmbeddings(const uint8_t* data, size_t size) {
  duet::v1::GetItemEmbeddingsRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  duet::common::Notification done;
  absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> result;
  Core().GetItemEmbeddings(
      request, absl::Now() + absl::Seconds(5),
      [&](absl::StatusOr<duet::v1::GetItemEmbeddingsResponse> r) {
        result = std::move(r);
        done.Notify();
      });
  FUZZ_CHECK(done.WaitForNotificationWithTimeout(kHang));
  if (!result.ok()) {
    CheckError(result.status());
    return;
  }
  const duet::v1::ModelConfig& c = Core().model().config();
  FUZZ_CHECK(result->items_size() == request.item_ids_size());
  for (const auto& item : result->items()) {
    FUZZ_CHECK(item.rows_size() == c.user_tables_size() * c.embedding_dim());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t selector = data[0];
  const bool stamp = (selector & 4) != 0;
  ++data;
  --size;
  switch (selector & 3) {
    case 0:
      RunSession(data, size, stamp);
      break;
    case 1:
      RunScore(data, size, stamp);
      break;
    case 2:
      RunMonolithic(data, size);
      break;
    case 3:
      RunEmbeddings(data, size);
      break;
  }
  // Every admitted request has ended (and released its slot).
  const absl::Time give_up = absl::Now() + kHang;
  while (Core().inflight() > 0) {
    FUZZ_CHECK(absl::Now() < give_up);
    absl::SleepFor(absl::Microseconds(50));
  }
  return 0;
}
