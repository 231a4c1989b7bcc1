#include "cloud/model_watcher.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/base/clock.h"
#include "common/base/mutex.h"
#include "common/model/model_config.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr const char* kWeightFiles[] = {
    "edge.safetensors", "edge_int8.safetensors", "cloud.safetensors",
    "user_tables.safetensors"};

// Generates tiny version `version` (seed = version) into a fresh directory.
std::unique_ptr<common::TempDir> Generate(uint32_t version) {
  auto dir = std::make_unique<common::TempDir>();
  auto config =
      common::GenerateTestModel("tiny", 1.0, dir->path(), version, version);
  EXPECT_TRUE(config.ok()) << config.status();
  return dir;
}

// Installs a model into a served directory the safe way: each weight file
// copied to a temporary name and renamed over (the serving model keeps its
// mappings of the old files), model.pbtxt last.
void Install(const std::string& from, const std::string& to) {
  std::vector<std::string> files(std::begin(kWeightFiles),
                                 std::end(kWeightFiles));
  files.push_back(common::kConfigFile);
  for (const std::string& f : files) {
    const std::string tmp = to + "/." + f + ".tmp";
    fs::copy_file(from + "/" + f, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to + "/" + f);
  }
}

// Flips one byte in the middle of `path` (a private copy, never a served
// file).
void FlipByte(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const std::streamoff mid = f.tellg() / 2;
  f.seekg(mid);
  char c = 0;
  f.get(c);
  f.seekp(mid);
  f.put(static_cast<char>(c ^ 0x5a));
}

duet::v1::UserVector VectorFor(const common::Model& m) {
  duet::v1::UserVector uv;
  uv.set_model_version(m.config().version());
  uv.set_model_fingerprint(m.fingerprint());
  for (int i = 0; i < m.dims().user_out; ++i) uv.add_fp32_data(0.1f * i);
  return uv;
}

// Scores 8 candidates with `m`'s user vector on the core.
absl::Status Query(ScoringCore& core, const common::Model& m) {
  duet::v1::BeginQuery begin;
  for (int i = 0; i < 8; ++i) begin.add_candidate_ids(i * 13);
  begin.set_top_k(3);
  begin.set_model_version(m.config().version());
  begin.set_model_fingerprint(m.fingerprint());
  common::Notification done;
  absl::Status status;
  auto q = core.Begin(begin, absl::InfiniteFuture(), Rpc::kScore,
                      [&](absl::StatusOr<duet::v1::Scores> r) {
                        status = r.status();
                        done.Notify();
                      });
  if (!q.ok()) return q.status();
  core.ProvideUserVector(*q, VectorFor(m));
  done.WaitForNotification();
  return status;
}

std::unique_ptr<const common::Model> Load(const std::string& dir) {
  common::LoadOptions lo;
  lo.parts.user_tables = true;
  auto model = common::Model::Load(dir, lo);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

class ModelWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    served_ = Generate(1);
    v1_ = Load(served_->path());
    ScoringCoreOptions o;
    o.workers = 2;
    o.max_candidates = 64;
    o.force_lookup = LookupStrategy::kBatch;
    o.force_user = UserStrategy::kLoad;
    o.placement_sample_items = 200;
    o.item_cache_entries = 100;
    o.registry = registry_;
    auto core = ScoringCore::Create(Load(served_->path()), o);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(core).value();
  }

  std::unique_ptr<ModelWatcher> MakeWatcher(absl::Duration poll,
                                            common::Clock* clock = nullptr) {
    ModelWatcher::Options wo;
    wo.dir = served_->path();
    wo.poll_interval = poll;
    wo.clock = clock;
    wo.load.parts.user_tables = true;
    wo.log = [this](const std::string& line) {
      common::MutexLock lock(&mu_);
      log_.push_back(line);
    };
    wo.on_versions_changed = [this] {
      common::MutexLock lock(&mu_);
      newest_.push_back(core_->model().config().version());
    };
    auto w = ModelWatcher::Create(core_.get(), wo);
    EXPECT_TRUE(w.ok()) << w.status();
    return std::move(w).value();
  }

  std::string Log() {
    common::MutexLock lock(&mu_);
    std::string all;
    for (const auto& l : log_) all += l + "\n";
    return all;
  }

  double Reloads(const std::string& result) {
    for (const auto& family : registry_->Collect()) {
      if (family.name != "duet_model_reloads_total") continue;
      for (const auto& metric : family.metric) {
        for (const auto& label : metric.label) {
          if (label.name == "result" && label.value == result) {
            return metric.counter.value;
          }
        }
      }
    }
    return -1;
  }

  std::shared_ptr<prometheus::Registry> registry_ =
      std::make_shared<prometheus::Registry>();
  std::unique_ptr<common::TempDir> served_;
  std::unique_ptr<const common::Model> v1_;
  std::unique_ptr<ScoringCore> core_;
  common::Mutex mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> newest_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ModelWatcherTest, UnchangedDirectoryDoesNothing) {
  auto w = MakeWatcher(absl::ZeroDuration());
  EXPECT_EQ(w->CheckNow(false).outcome, ModelWatcher::Outcome::kUnchanged);
  // Forced: the file names the serving signature, so still nothing to do.
  EXPECT_EQ(w->CheckNow(true).outcome, ModelWatcher::Outcome::kUnchanged);
  EXPECT_THAT(Log(), HasSubstr("already served"));
  EXPECT_EQ(w->reloads_ok() + w->reloads_failed(), 0);
  EXPECT_EQ(Reloads("ok"), 0);
  EXPECT_EQ(Reloads("failed"), 0);
}

TEST_F(ModelWatcherTest, NewVersionIsServedBesideTheOld) {
  auto w = MakeWatcher(absl::ZeroDuration());
  auto v2_dir = Generate(2);
  Install(v2_dir->path(), served_->path());
  const ModelWatcher::Result r = w->CheckNow(false);
  ASSERT_EQ(r.outcome, ModelWatcher::Outcome::kReloaded) << r.status;
  EXPECT_EQ(core_->model().config().version(), 2u);
  auto v2 = Load(v2_dir->path());
  EXPECT_TRUE(Query(*core_, *v2).ok());
  // Devices still on v1 keep being served (the files on disk are v2's now).
  EXPECT_TRUE(Query(*core_, *v1_).ok());
  EXPECT_EQ(Reloads("ok"), 1);
  EXPECT_THAT(Log(), HasSubstr("model loaded: tiny v2"));
  EXPECT_THAT(Log(), HasSubstr("serving tiny v2 (signature"));
  // Without a release policy every device's target is the newest.
  const auto target = core_->TargetFor("any-device");
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(target->version(), 2u);
  EXPECT_EQ(target->fingerprint(), v2->fingerprint());
  common::MutexLock lock(&mu_);
  EXPECT_THAT(newest_, ::testing::ElementsAre(2u));
}

TEST_F(ModelWatcherTest, AbsentConfigWhileANewVersionIsWrittenIsNoFailure) {
  auto w = MakeWatcher(absl::ZeroDuration());
  fs::remove(served_->path() + "/model.pbtxt");  // what a generator does first
  EXPECT_EQ(w->CheckNow(false).outcome, ModelWatcher::Outcome::kUnchanged);
  EXPECT_EQ(w->CheckNow(false).outcome, ModelWatcher::Outcome::kUnchanged);
  EXPECT_EQ(Reloads("failed"), 0);
  EXPECT_THAT(Log(), HasSubstr("model.pbtxt is absent (a new version being "
                               "written?); waiting, still serving tiny v1 "));
  EXPECT_TRUE(Query(*core_, *v1_).ok());
  auto v2_dir = Generate(2);
  Install(v2_dir->path(), served_->path());
  EXPECT_EQ(w->CheckNow(false).outcome, ModelWatcher::Outcome::kReloaded);
}

TEST_F(ModelWatcherTest, VersionedLayoutServesTheLatestKeepVersions) {
  common::TempDir base;
  for (uint32_t v : {2u, 3u}) {
    fs::create_directory(base.path() + "/" + std::to_string(v));
    auto dir = Generate(v);
    Install(dir->path(), base.path() + "/" + std::to_string(v));
  }
  fs::create_directory(base.path() + "/notaversion");
  EXPECT_EQ(InitialModelDir(base.path(), {}).value(), base.path() + "/3");
  VersionPolicy only2;
  only2.versions = {2};
  EXPECT_EQ(InitialModelDir(base.path(), only2).value(), base.path() + "/2");
  EXPECT_EQ(InitialModelDir(served_->path(), {}).value(), served_->path());
  only2.versions = {7};
  EXPECT_EQ(InitialModelDir(base.path(), only2).status().code(),
            absl::StatusCode::kNotFound);

  ModelWatcher::Options wo;
  wo.dir = base.path();
  wo.poll_interval = absl::ZeroDuration();
  wo.load.parts.user_tables = true;
  auto w = ModelWatcher::Create(core_.get(), wo);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ((*w)->CheckNow(false).outcome, ModelWatcher::Outcome::kReloaded);
  const std::vector<ServedModels::Info> list = core_->served().List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].version, 3u);
  EXPECT_EQ(list[0].state, ServedModels::State::kAvailable);
  EXPECT_EQ(list[1].version, 2u);
  EXPECT_EQ(list[1].state, ServedModels::State::kAvailable);
  // v1 (loaded first, not in DIR) is outside "the latest 2": retiring, and
  // still served until it has been idle for the grace period.
  EXPECT_EQ(list[2].version, 1u);
  EXPECT_EQ(list[2].state, ServedModels::State::kRetiring);
  EXPECT_TRUE(Query(*core_, *v1_).ok());
}

TEST_F(ModelWatcherTest, ReleasePolicyFileSetsTargetsAndPinsVersions) {
  auto w = MakeWatcher(absl::ZeroDuration());
  auto v2_dir = Generate(2);
  Install(v2_dir->path(), served_->path());
  {
    std::ofstream f(served_->path() + "/release.pbtxt");
    f << "target_version: 1\ncanary_version: 2\ncanary_devices: \"dev-a\"\n";
  }
  ASSERT_EQ(w->CheckNow(false).outcome, ModelWatcher::Outcome::kReloaded);
  EXPECT_THAT(Log(), HasSubstr("every device: v1; canary v2: 0% of devices "
                               "and dev-a"));
  EXPECT_EQ(core_->TargetFor("dev-a")->version(), 2u);
  EXPECT_EQ(core_->TargetFor("dev-b")->version(), 1u);
  EXPECT_EQ(core_->TargetFor("")->version(), 1u);
  // A bad edit keeps the policy in force.
  {
    std::ofstream f(served_->path() + "/release.pbtxt");
    f << "target_version: 1\ncanary_percent: 150\n";
  }
  w->CheckNow(false);
  EXPECT_THAT(Log(), HasSubstr("release policy NOT changed (still: every "
                               "device: v1; canary v2"));
  EXPECT_THAT(Log(), HasSubstr("canary_percent is 150, must be in [0, 100]"));
  EXPECT_EQ(core_->TargetFor("dev-a")->version(), 2u);
  // A target that is not served is announced to nobody.
  {
    std::ofstream f(served_->path() + "/release.pbtxt");
    f << "target_version: 5\n";
  }
  w->CheckNow(false);
  EXPECT_FALSE(core_->TargetFor("dev-b").has_value());
  // Removed: the newest for everyone.
  fs::remove(served_->path() + "/release.pbtxt");
  w->CheckNow(false);
  EXPECT_EQ(core_->TargetFor("dev-b")->version(), 2u);
}

TEST_F(ModelWatcherTest, CorruptWeightsKeepOldModelUntilNextChange) {
  auto w = MakeWatcher(absl::ZeroDuration());
  auto v2_dir = Generate(2);
  FlipByte(v2_dir->path() + "/cloud.safetensors");
  Install(v2_dir->path(), served_->path());
  ModelWatcher::Result r = w->CheckNow(false);
  ASSERT_EQ(r.outcome, ModelWatcher::Outcome::kFailed);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss) << r.status;
  EXPECT_THAT(r.status.message(), HasSubstr("cloud.safetensors has SHA-256"));
  EXPECT_EQ(core_->model().config().version(), 1u);
  EXPECT_TRUE(Query(*core_, *v1_).ok());
  EXPECT_EQ(Reloads("failed"), 1);
  EXPECT_EQ(Reloads("ok"), 0);
  EXPECT_THAT(Log(), HasSubstr("FAILED, still serving tiny v1"));
  // Not retried on every poll...
  EXPECT_EQ(w->CheckNow(false).outcome, ModelWatcher::Outcome::kUnchanged);
  EXPECT_EQ(w->reloads_failed(), 1);
  // ...but a good version written afterwards is picked up.
  auto v3_dir = Generate(3);
  Install(v3_dir->path(), served_->path());
  r = w->CheckNow(false);
  ASSERT_EQ(r.outcome, ModelWatcher::Outcome::kReloaded) << r.status;
  EXPECT_EQ(core_->model().config().version(), 3u);
  EXPECT_EQ(Reloads("ok"), 1);
}

TEST_F(ModelWatcherTest, TruncatedWeightsAndBadConfigKeepOldModel) {
  auto w = MakeWatcher(absl::ZeroDuration());
  auto v2_dir = Generate(2);
  const std::string cloud = v2_dir->path() + "/cloud.safetensors";
  fs::resize_file(cloud, fs::file_size(cloud) / 2);
  Install(v2_dir->path(), served_->path());
  ModelWatcher::Result r = w->CheckNow(false);
  ASSERT_EQ(r.outcome, ModelWatcher::Outcome::kFailed);
  EXPECT_THAT(r.status.message(), HasSubstr("cloud.safetensors"));
  EXPECT_EQ(core_->model().config().version(), 1u);

  {
    std::ofstream bad(served_->path() + "/.model.pbtxt.tmp");
    bad << "name: \"tiny\"\nversion: 9\nembedding_dim: oops\n";
  }
  fs::rename(served_->path() + "/.model.pbtxt.tmp",
             served_->path() + "/model.pbtxt");
  r = w->CheckNow(false);
  ASSERT_EQ(r.outcome, ModelWatcher::Outcome::kFailed);
  EXPECT_THAT(r.status.message(), HasSubstr("model.pbtxt"));
  EXPECT_EQ(core_->model().config().version(), 1u);
  EXPECT_TRUE(Query(*core_, *v1_).ok());
  EXPECT_EQ(Reloads("failed"), 2);
  // A forced check retries (and fails again: the files did not change).
  EXPECT_EQ(w->CheckNow(true).outcome, ModelWatcher::Outcome::kFailed);
  EXPECT_EQ(Reloads("failed"), 3);
}

TEST_F(ModelWatcherTest, PollingThreadPicksUpNewVersionAtThePollInterval) {
  common::FakeClock clock;
  auto w = MakeWatcher(absl::Seconds(1), &clock);
  clock.WaitForWaiters(1);  // its first wait for the poll interval
  auto v2_dir = Generate(2);
  Install(v2_dir->path(), served_->path());
  // The watcher cannot leave its wait before the clock passes the interval.
  clock.Advance(absl::Milliseconds(999));
  EXPECT_EQ(w->reloads_ok(), 0);
  EXPECT_EQ(clock.waiters(), 1);
  clock.Advance(absl::Milliseconds(1));
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (w->reloads_ok() == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(w->reloads_ok(), 1) << Log();
  EXPECT_EQ(core_->model().config().version(), 2u);
  EXPECT_EQ(w->reloads_failed(), 0);
}

TEST_F(ModelWatcherTest, TriggerReloadsBeforeThePollInterval) {
  common::FakeClock clock;  // never advanced: no poll comes due
  auto w = MakeWatcher(absl::Seconds(1), &clock);
  clock.WaitForWaiters(1);
  auto v2_dir = Generate(2);
  Install(v2_dir->path(), served_->path());
  EXPECT_EQ(w->reloads_ok(), 0);  // it waits on the clock, which stands still
  w->Trigger();
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (w->reloads_ok() == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(w->reloads_ok(), 1) << Log();
  EXPECT_EQ(core_->model().config().version(), 2u);
}

}  // namespace
}  // namespace duet::cloud
