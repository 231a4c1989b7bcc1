#include "common/cli/flags.h"

#include <unistd.h>

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, workers, 4, "Worker threads of the test.");
ABSL_FLAG(std::string, model, "", "Model directory of the test.");
ABSL_FLAG(bool, verbose, true, "Whether the test says more.");

namespace duet::common {
namespace {

using ::testing::ExitedWithCode;

// ParseFlagsOrExit on "cli_flags_test" + `args`.
void Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "/some/dir/cli_flags_test");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  ParseFlagsOrExit(static_cast<int>(argv.size()), argv.data(),
                   "Tests the command-line contract.", __FILE__);
}

// As Parse, with stdout sent to stderr so a death test can match it.
void ParseShowingStdout(std::vector<std::string> args) {
  dup2(STDERR_FILENO, STDOUT_FILENO);
  Parse(std::move(args));
}

// The one call in the test process itself (absl takes one usage message per
// process): gtest runs the *DeathTest suites first, each parse in a child.
TEST(ParseFlagsOrExitTest, SetsFlagsAndReturns) {
  Parse({"--workers=3", "--model", "-h", "--noverbose"});
  EXPECT_EQ(absl::GetFlag(FLAGS_workers), 3);
  EXPECT_EQ(absl::GetFlag(FLAGS_model), "-h");  // a value, not help
  EXPECT_FALSE(absl::GetFlag(FLAGS_verbose));
}

TEST(ParseFlagsOrExitDeathTest, HelpPrintsThisFilesFlagsAndExitsZero) {
  for (const char* help : {"--help", "-h", "-help", "--helpshort"}) {
    SCOPED_TRACE(help);
    EXPECT_EXIT(ParseShowingStdout({help}), ExitedWithCode(0),
                "cli_flags_test: Tests the command-line contract.*"
                "Flags from common/cli/flags_test.cc.*--workers.*Worker "
                "threads of the test");
  }
  EXPECT_EXIT(ParseShowingStdout({"--helpfull"}), ExitedWithCode(0),
              "--flagfile.*--workers");
  EXPECT_EXIT(ParseShowingStdout({"--version"}), ExitedWithCode(0),
              "^cli_flags_test [0-9]+\\.[0-9]+\\.[0-9]+\n$");
}

TEST(ParseFlagsOrExitDeathTest, HelpGoesToStdoutOnly) {
  EXPECT_EXIT(Parse({"--help"}), ExitedWithCode(0), "^$");
}

TEST(ParseFlagsOrExitDeathTest, BadCommandLinesExitTwoNamingTheProblem) {
  const char* const hint = ".*Try 'cli_flags_test --help' for usage";
  EXPECT_EXIT(Parse({"--bogus"}), ExitedWithCode(2),
              std::string("ERROR: Unknown command line flag 'bogus'") + hint);
  EXPECT_EXIT(Parse({"-x"}), ExitedWithCode(2),
              "Unknown command line flag 'x'");
  EXPECT_EXIT(
      Parse({"--workers=abc"}), ExitedWithCode(2),
      std::string("Illegal value 'abc' specified for flag 'workers'") + hint);
  EXPECT_EXIT(Parse({"--workers"}), ExitedWithCode(2),
              "Missing the value for the flag 'workers'");
  EXPECT_EXIT(Parse({"--verbose=maybe"}), ExitedWithCode(2),
              "Illegal value 'maybe' specified for flag 'verbose'");
  EXPECT_EXIT(Parse({"extra"}), ExitedWithCode(2),
              std::string("ERROR: Unexpected argument 'extra' "
                          "\\(cli_flags_test takes flags only\\)") +
                  hint);
  // After "--" everything is positional, "-h" included.
  EXPECT_EXIT(Parse({"--", "-h"}), ExitedWithCode(2),
              "Unexpected argument '-h'");
}

}  // namespace
}  // namespace duet::common
