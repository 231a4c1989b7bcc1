#include "cloud/strategy_selector.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::cloud {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Fake timings: alternative 0 costs n us + 100 us, alternative 1 costs 3n us:
// 1 wins below N = 50, 0 from N = 64 on.
absl::StatusOr<absl::Duration> Linear(int choice, int n) {
  return choice == 0 ? absl::Microseconds(n + 100) : absl::Microseconds(3 * n);
}

TEST(StrategySelectorTest, CalibrationFindsCrossover) {
  StrategySelector::Options o;
  o.max_n = 1024;
  o.budget = absl::Milliseconds(50);
  auto s = StrategySelector::Create(o, Linear, Linear);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT((*s)->grid(), ElementsAre(8, 16, 32, 64, 128, 256, 512, 1024));
  EXPECT_EQ((*s)->ChooseLookup(8), LookupStrategy::kTable);
  EXPECT_EQ((*s)->ChooseLookup(32), LookupStrategy::kTable);
  EXPECT_EQ((*s)->ChooseLookup(33), LookupStrategy::kBatch);  // grid 64
  EXPECT_EQ((*s)->ChooseLookup(1024), LookupStrategy::kBatch);
  EXPECT_EQ((*s)->ChooseUser(1), UserStrategy::kRecompute);
  EXPECT_EQ((*s)->ChooseUser(5000), UserStrategy::kLoad);  // beyond the grid
  EXPECT_EQ((*s)->lookup_count(LookupStrategy::kTable), 2u);
  EXPECT_EQ((*s)->lookup_count(LookupStrategy::kBatch), 2u);
  EXPECT_EQ((*s)->user_count(UserStrategy::kLoad), 1u);
  EXPECT_EQ((*s)->user_count(UserStrategy::kRecompute), 1u);
  EXPECT_THAT((*s)->DebugString(),
              HasSubstr("lookup strategy: table from N=8, batch from N=64"));
  const auto& m = (*s)->lookup_measurements();
  ASSERT_EQ(m.size(), 8u);
  EXPECT_DOUBLE_EQ(m[0].seconds[0], 108e-6);
  EXPECT_DOUBLE_EQ(m[0].seconds[1], 24e-6);
}

TEST(StrategySelectorTest, ForcedChoicesSkipCalibrationAndAreCounted) {
  int calls = 0;
  auto counting = [&calls](int, int) -> absl::StatusOr<absl::Duration> {
    ++calls;
    return absl::Microseconds(1);
  };
  StrategySelector::Options o;
  o.force_lookup = LookupStrategy::kTable;
  o.force_user = UserStrategy::kLoad;
  auto s = StrategySelector::Create(o, counting, counting);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(calls, 0);
  for (int n : {1, 8, 100, 1024}) {
    EXPECT_EQ((*s)->ChooseLookup(n), LookupStrategy::kTable);
    EXPECT_EQ((*s)->ChooseUser(n), UserStrategy::kLoad);
  }
  EXPECT_EQ((*s)->lookup_count(LookupStrategy::kTable), 4u);
  EXPECT_EQ((*s)->lookup_count(LookupStrategy::kBatch), 0u);
  EXPECT_EQ((*s)->user_count(UserStrategy::kLoad), 4u);
  EXPECT_THAT((*s)->DebugString(), HasSubstr("lookup strategy: forced table"));
  EXPECT_TRUE((*s)->lookup_measurements().empty());
}

TEST(StrategySelectorTest, BudgetBoundsRepetitions) {
  int calls = 0;
  auto slow = [&calls](int, int) -> absl::StatusOr<absl::Duration> {
    ++calls;
    return absl::Milliseconds(10);
  };
  StrategySelector::Options o;
  o.force_user = UserStrategy::kRecompute;
  o.max_n = 64;                       // grid 8, 16, 32, 64
  o.budget = absl::Milliseconds(80);  // 20 ms per cell: one rep pair
  auto s = StrategySelector::Create(o, slow, slow);
  ASSERT_TRUE(s.ok());
  // Per grid point: 2 warm-up calls + one pair of timed calls.
  EXPECT_EQ(calls, 4 * 4);
}

TEST(StrategySelectorTest, ProbeErrorFailsCreate) {
  auto failing = [](int, int) -> absl::StatusOr<absl::Duration> {
    return absl::InternalError("oneDNN said no");
  };
  auto s = StrategySelector::Create({}, failing, Linear);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.status().message(), HasSubstr("oneDNN said no"));
}

TEST(StrategySelectorTest, ParseFlags) {
  EXPECT_EQ(ParseLookupFlag("auto").value(), std::nullopt);
  EXPECT_EQ(ParseLookupFlag("table").value(), LookupStrategy::kTable);
  EXPECT_EQ(ParseUserFlag("recompute").value(), UserStrategy::kRecompute);
  EXPECT_THAT(ParseLookupFlag("fast").status().message(),
              HasSubstr("'fast' is not one of auto, batch, table"));
  EXPECT_EQ(ParseUserFlag("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::cloud
