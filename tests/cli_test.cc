// The command-line contract of every binary (DESIGN.md §8): --help and -h
// print usage on stdout and exit 0; an unknown flag, a malformed value or an
// unexpected argument exits 2 naming it on stderr; and the servers log the
// ports they bound when asked for port 0.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_process.h"

extern char** environ;

namespace duet::test {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Outcome {
  int exit_code = -1;  // -signal if a signal ended it
  std::string out, err;
};

// Runs a built binary to completion with stdout and stderr kept apart (the
// Subprocess helper merges them); killed after 30 s.
Outcome RunBinary(const common::TempDir& dir, const std::string& binary,
                  const std::vector<std::string>& args) {
  const std::string out_path = dir.File("stdout"),
                    err_path = dir.File("stderr");
  std::vector<std::string> argv = {BinaryPath(binary)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> raw;
  for (std::string& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, raw[0], &actions, nullptr, raw.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  Outcome o;
  if (rc != 0) {
    o.err = absl::StrCat("posix_spawn ", argv[0], " failed: ", rc);
    return o;
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (absl::Now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  o.out = ReadFile(out_path);
  o.err = ReadFile(err_path);
  return o;
}

std::string Describe(const Outcome& o) {
  return absl::StrCat("exit ", o.exit_code, "\n--- stdout:\n", o.out,
                      "\n--- stderr:\n", o.err);
}

// One binary and the command lines that exercise its contract.
struct Cli {
  std::string name;        // test name
  std::string binary;      // path in the build tree
  std::string known_flag;  // --help lists it
  std::vector<std::string> unknown_flag;
  std::vector<std::string> bad_value;  // "abc" for a numeric flag
  std::string bad_value_flag;          // the flag stderr must name
  std::vector<std::string> extra_argument;
  std::vector<std::string> missing_required;  // no or an empty required flag
  bool absl_flags = true;                     // --helpfull exists
};

const Cli kClis[] = {
    {"duet_cloud",
     "cloud/duet-cloud",
     "--metrics_listen",
     {"--bogus_flag"},
     {"--workers=abc"},
     "workers",
     {"extra"},
     {}},
    {"duet_edge",
     "edge/duet-edge",
     "--state_dir",
     {"--bogus_flag"},
     {"--cloud_streams", "abc"},
     "cloud_streams",
     {"extra"},
     {}},
    {"duet_loadgen",
     "tools/duet-loadgen",
     "--edge_metrics",
     {"--bogus_flag"},
     {"--qps=abc"},
     "qps",
     {"extra"},
     {}},
    {"duet_health_probe",
     "tools/duet-health-probe",
     "--timeout_ms",
     {"--bogus_flag"},
     {"--timeout_ms=abc"},
     "timeout_ms",
     {"extra"},
     {"--addr="}},
    {"duet_model",
     "tools/duet-model",
     "--rows-scale",
     {"gen", "--bogus_flag"},
     {"gen", "--preset", "tiny", "--out", "/nonexistent/m", "--rows-scale",
      "abc"},
     "rows-scale",
     {"verify", "/nonexistent/m", "extra"},
     {},
     false},
};

class CliTest : public ::testing::TestWithParam<Cli> {
 protected:
  Outcome Run(const std::vector<std::string>& args) {
    return RunBinary(dir_, GetParam().binary, args);
  }
  common::TempDir dir_;
};

TEST_P(CliTest, HelpPrintsUsageOnStdoutAndExitsZero) {
  std::vector<std::vector<std::string>> helps = {{"--help"}, {"-h"}};
  if (GetParam().absl_flags) helps.push_back({"--helpfull"});
  for (const auto& help : helps) {
    SCOPED_TRACE(help[0]);
    const Outcome o = Run(help);
    EXPECT_EQ(o.exit_code, 0) << Describe(o);
    EXPECT_THAT(o.out, HasSubstr(GetParam().known_flag)) << Describe(o);
    EXPECT_THAT(o.err, IsEmpty()) << Describe(o);
  }
}

TEST_P(CliTest, UnknownFlagExitsTwoNamingIt) {
  const Outcome o = Run(GetParam().unknown_flag);
  EXPECT_EQ(o.exit_code, 2) << Describe(o);
  EXPECT_THAT(o.err, HasSubstr("bogus_flag")) << Describe(o);
  EXPECT_THAT(o.err, HasSubstr("--help")) << Describe(o);
  EXPECT_THAT(o.out, IsEmpty()) << Describe(o);
}

TEST_P(CliTest, MalformedValueExitsTwoNamingTheFlag) {
  const Outcome o = Run(GetParam().bad_value);
  EXPECT_EQ(o.exit_code, 2) << Describe(o);
  EXPECT_THAT(o.err, HasSubstr(GetParam().bad_value_flag)) << Describe(o);
  EXPECT_THAT(o.err, HasSubstr("'abc'")) << Describe(o);
}

TEST_P(CliTest, UnexpectedArgumentExitsTwo) {
  const Outcome o = Run(GetParam().extra_argument);
  EXPECT_EQ(o.exit_code, 2) << Describe(o);
  EXPECT_THAT(o.err, HasSubstr("'extra'")) << Describe(o);
}

TEST_P(CliTest, MissingRequiredArgumentsExitTwo) {
  // The servers and the loadgen need --model, duet-model a command.
  const Outcome o = Run(GetParam().missing_required);
  EXPECT_EQ(o.exit_code, 2) << Describe(o);
  EXPECT_THAT(o.err, HasSubstr("--help")) << Describe(o);
  EXPECT_THAT(o.out, IsEmpty()) << Describe(o);
}

INSTANTIATE_TEST_SUITE_P(Binaries, CliTest, ::testing::ValuesIn(kClis),
                         [](const ::testing::TestParamInfo<Cli>& info) {
                           return info.param.name;
                         });

// Waits until `process`'s log matches `pattern` (one capture group, a port)
// and returns the port; 0 on timeout or exit.
int LoggedPort(Subprocess& process, const std::string& pattern) {
  const std::regex re(pattern);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    const std::string log = process.ReadLog();
    std::smatch m;
    int port = 0;
    if (std::regex_search(log, m, re) && absl::SimpleAtoi(m.str(1), &port)) {
      return port;
    }
    if (!process.Running()) return 0;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return 0;
}

// SIGTERM, then the exit code (or -1).
int Stop(Subprocess& process) {
  if (!process.Signal(SIGTERM).ok()) return -1;
  auto code = process.Wait(absl::Seconds(30));
  return code.ok() ? *code : -1;
}

TEST(BoundPortsTest, ServersLogThePortsTheyBoundForPortZero) {
  common::TempDir dir;
  const std::string model = dir.File("model");
  const Outcome gen = RunBinary(
      dir, "tools/duet-model",
      {"gen", "--preset", "tiny", "--rows-scale", "1", "--out", model});
  ASSERT_EQ(gen.exit_code, 0) << Describe(gen);

  auto cloud = Subprocess::Start(
      {BinaryPath("cloud/duet-cloud"), "--model", model, "--listen",
       "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0", "--workers", "1",
       "--calibration_ms", "50", "--shutdown_grace_s", "1"},
      dir.File("cloud.log"));
  ASSERT_TRUE(cloud.ok()) << cloud.status();
  const int cloud_metrics = LoggedPort(
      **cloud, R"(duet-cloud: metrics on http://127\.0\.0\.1:(\d+)/metrics)");
  const int cloud_grpc = LoggedPort(
      **cloud,
      R"(duet-cloud: serving duet\.v1\.ScoringService on 127\.0\.0\.1:(\d+)\n)");
  ASSERT_GT(cloud_metrics, 0) << (*cloud)->ReadLog();
  ASSERT_GT(cloud_grpc, 0) << (*cloud)->ReadLog();
  const std::string cloud_addr = absl::StrCat("127.0.0.1:", cloud_grpc);
  ASSERT_TRUE(WaitForHealthy(cloud_addr, absl::Seconds(30), cloud->get()).ok());
  EXPECT_THAT(HttpGet(cloud_metrics, "/metrics"),
              HasSubstr("duet_build_info{side=\"cloud\""));

  auto edge = Subprocess::Start(
      {BinaryPath("edge/duet-edge"), "--model", model, "--cloud", cloud_addr,
       "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0",
       "--state_dir", dir.File("edge_state")},
      dir.File("edge.log"));
  ASSERT_TRUE(edge.ok()) << edge.status();
  const int edge_grpc = LoggedPort(
      **edge, R"(duet-edge: serving EdgeService on 127\.0\.0\.1:(\d+),)");
  const int edge_metrics =
      LoggedPort(**edge, R"(, metrics http://127\.0\.0\.1:(\d+)/metrics\n)");
  ASSERT_GT(edge_grpc, 0) << (*edge)->ReadLog();
  ASSERT_GT(edge_metrics, 0) << (*edge)->ReadLog();
  EXPECT_TRUE(WaitForHealthy(absl::StrCat("127.0.0.1:", edge_grpc),
                             absl::Seconds(30), edge->get())
                  .ok());
  EXPECT_THAT(HttpGet(edge_metrics, "/metrics"),
              HasSubstr("duet_build_info{side=\"edge\""));

  EXPECT_EQ(Stop(**edge), 0) << (*edge)->ReadLog();
  EXPECT_EQ(Stop(**cloud), 0) << (*cloud)->ReadLog();
}

}  // namespace
}  // namespace duet::test
