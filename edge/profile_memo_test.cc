#include "edge/profile_memo.h"

#include <atomic>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "common/base/status_matchers.h"
#include "common/base/thread_pool.h"
#include "edge/internal/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::edge {
namespace {

using common::StatusIs;
using internal::SharedTestModel;
using testing::HasSubstr;

std::vector<float> RandomProfile(int n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> s(n);
  for (float& x : s) x = dist(rng);
  return s;
}

std::vector<float> Reference(const common::Model& m,
                             const std::vector<float>& s) {
  std::vector<float> z(m.dims().static_out);
  EXPECT_TRUE(common::RunOrIdentity(m.static_bottom(), s.data(), 1,
                                    m.dims().static_in, z.data())
                  .ok());
  return z;
}

ProfileMemo::Options MemoOptions(const common::Model& m,
                                 ProfileMemo::Executor executor) {
  ProfileMemo::Options o;
  o.static_bottom = m.static_bottom();
  o.static_in = m.dims().static_in;
  o.static_out = m.dims().static_out;
  o.executor = std::move(executor);
  return o;
}

TEST(ProfileMemoTest, ComputeNowMatchesStaticBottomMlp) {
  const common::Model& m = SharedTestModel();
  ProfileMemo memo(MemoOptions(m, nullptr));
  const auto s = RandomProfile(m.dims().static_in, 1);
  ASSERT_TRUE(memo.ComputeNow(s, 3).ok());
  EXPECT_EQ(memo.version(), 3u);
  EXPECT_EQ(memo.Current()->z_s, Reference(m, s));
  EXPECT_THAT(memo.ComputeNow(std::vector<float>(5), 4),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("static_features has 5 values")));
  EXPECT_THAT(memo.Restore(5, std::vector<float>(3)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("memoized z_s has 3 values")));
}

// Background recomputes finishing out of order never publish an older
// profile over a newer one.
TEST(ProfileMemoTest, OutOfOrderRecomputesKeepTheNewest) {
  const common::Model& m = SharedTestModel();
  std::vector<std::function<void()>> queued;
  ProfileMemo memo(MemoOptions(
      m, [&queued](std::function<void()> fn) { queued.push_back(fn); }));
  const auto s1 = RandomProfile(m.dims().static_in, 1);
  const auto s2 = RandomProfile(m.dims().static_in, 2);
  memo.RecomputeInBackground(s1, 1);
  memo.RecomputeInBackground(s2, 2);
  EXPECT_EQ(memo.version(), 0u) << "published before the task ran";
  ASSERT_EQ(queued.size(), 2u);
  queued[1]();
  EXPECT_EQ(memo.version(), 2u);
  queued[0]();
  EXPECT_EQ(memo.version(), 2u);
  EXPECT_EQ(memo.Current()->z_s, Reference(m, s2));
  EXPECT_EQ(memo.recomputes(), 2);
}

// Readers on several threads, while profiles alternate and are recomputed
// on a background pool, always see a z_s that is entirely the one of the
// version they see: never a mix of two profiles.
TEST(ProfileMemoTest, ConcurrentReadersSeeOldOrNewNeverAMix) {
  const common::Model& m = SharedTestModel();
  common::ThreadPool pool(2, "memo");
  ProfileMemo memo(MemoOptions(
      m, [&pool](std::function<void()> fn) { pool.Schedule(std::move(fn)); }));
  const auto a = RandomProfile(m.dims().static_in, 1);
  const auto b = RandomProfile(m.dims().static_in, 2);
  const auto za = Reference(m, a), zb = Reference(m, b);
  ASSERT_NE(za, zb);
  ASSERT_TRUE(memo.ComputeNow(b, 0).ok());  // even versions: b, odd: a

  constexpr int kReaders = 3;
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::atomic<int64_t> reads{0}, bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      bool counted = false;
      while (!stop) {
        const auto v = memo.Current();
        if (v->z_s != (v->version % 2 == 1 ? za : zb)) ++bad;
        ++reads;
        if (!counted) {
          counted = true;
          ++started;
        }
      }
    });
  }
  // Every reader is reading before the first update (on a loaded machine a
  // thread may otherwise not run until the updates are over).
  while (started.load() < kReaders) std::this_thread::yield();
  constexpr uint64_t kUpdates = 300;
  for (uint64_t v = 1; v <= kUpdates; ++v) {
    memo.RecomputeInBackground(v % 2 == 1 ? a : b, v);
  }
  EXPECT_TRUE(memo.WaitForVersion(kUpdates, absl::Seconds(30)));
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad, 0) << "of " << reads << " reads";
  EXPECT_GE(reads, kReaders);
  EXPECT_EQ(memo.Current()->z_s, zb);
}

}  // namespace
}  // namespace duet::edge
