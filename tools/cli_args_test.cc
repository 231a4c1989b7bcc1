#include "tools/cli_args.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::tools {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(CliArgsTest, ParsesValuesBooleansAndPositionals) {
  auto args =
      CliArgs::Parse({"DIR", "--rows-scale", "0.5", "--seed=3", "--json"},
                     {"rows-scale", "seed"}, {"json"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(args->positional(), ElementsAre("DIR"));
  EXPECT_DOUBLE_EQ(*args->GetDouble("rows-scale", 1.0), 0.5);
  EXPECT_EQ(*args->GetUint("seed", 1), 3u);
  EXPECT_TRUE(args->Has("json"));
  EXPECT_EQ(*args->GetInt("missing", 42), 42);
}

TEST(CliArgsTest, RejectsUnknownFlagsMissingValuesAndBadNumbers) {
  auto unknown = CliArgs::Parse({"--bogus"}, {"seed"}, {});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown flag --bogus"));

  auto missing = CliArgs::Parse({"--seed"}, {"seed"}, {});
  EXPECT_THAT(missing.status().message(), HasSubstr("--seed needs a value"));

  auto bad = CliArgs::Parse({"--seed", "x1"}, {"seed"}, {});
  ASSERT_TRUE(bad.ok());
  EXPECT_THAT(bad->GetUint("seed", 0).status().message(),
              HasSubstr("--seed expects a non-negative integer, got 'x1'"));
  auto bool_value = CliArgs::Parse({"--json=maybe"}, {}, {"json"});
  EXPECT_THAT(bool_value.status().message(), HasSubstr("takes no value"));

  auto short_flag = CliArgs::Parse({"DIR", "-x"}, {}, {"help"});
  EXPECT_EQ(short_flag.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_flag.status().message(), HasSubstr("unknown flag -x"));
  // -h is only --help where help is a flag.
  EXPECT_THAT(CliArgs::Parse({"-h"}, {}, {}).status().message(),
              HasSubstr("unknown flag -h"));
}

TEST(CliArgsTest, ShortHelpDashAndDoubleDash) {
  auto args = CliArgs::Parse({"-h", "-", "--seed", "-1", "--", "--json", "-h"},
                             {"seed"}, {"help", "json"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_TRUE(args->Has("help"));
  EXPECT_EQ(args->Get("seed"), "-1");  // a value, not a flag
  EXPECT_FALSE(args->Has("json"));
  EXPECT_THAT(args->positional(), ElementsAre("-", "--json", "-h"));
}

}  // namespace
}  // namespace duet::tools
