// Helpers for multi-process integration tests: start a built binary as a
// child process with its output in a log file, pick a free loopback port,
// wait for a gRPC server's grpc.health.v1 status, and find built binaries.
#ifndef DUET_TESTS_TEST_PROCESS_H_
#define DUET_TESTS_TEST_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace duet::test {

// A child process. Not thread-safe. The destructor kills it with SIGKILL
// (and reaps it) if it is still running.
class Subprocess {
 public:
  // argv[0] is the executable's path (no PATH search). stdout and stderr
  // both go to `log_path` (truncated).
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      std::vector<std::string> argv, std::string log_path);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  int pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // FAILED_PRECONDITION once the process has been reaped.
  absl::Status Signal(int sig);
  // Exit code, or -signal if a signal ended it; DEADLINE_EXCEEDED if it is
  // still running after `timeout`.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  bool Running();
  // The log so far ("" if unreadable), for failure messages.
  std::string ReadLog() const;

 private:
  Subprocess(pid_t pid, std::string log_path)
      : pid_(pid), log_path_(std::move(log_path)) {}
  // Reaps without blocking; true once the process has ended.
  bool Poll();

  pid_t pid_;
  std::string log_path_;
  std::optional<int> exit_;  // set once reaped
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read
// it, close). Aborts the test binary if no socket can be bound.
int PickFreePort();

// Polls grpc.health.v1.Health/Check (service "") on `target` until it
// reports SERVING. DEADLINE_EXCEEDED with the last error after `timeout`;
// if `process` is given and exits first, FAILED_PRECONDITION with its exit
// code and log tail.
absl::Status WaitForHealthy(const std::string& target, absl::Duration timeout,
                            Subprocess* process = nullptr);

// Path of a built binary, relative to the build tree: the build tree above
// this test binary's folder, or $DUET_BINARY_DIR when set (to run a test
// binary against another build), e.g. BinaryPath("cloud/duet-cloud").
std::string BinaryPath(const std::string& relative);

// GET `path` from 127.0.0.1:`port` over HTTP/1.0 (a /metrics endpoint); the
// body, or "" on any failure.
std::string HttpGet(int port, const std::string& path);

// Sum of the samples of metric `name` in Prometheus text `text` whose label
// set contains every entry of `labels` (each `key="value"`); -1 if none.
double MetricValue(const std::string& text, const std::string& name,
                   const std::vector<std::string>& labels = {});

// The outcome of a call made with raw bytes.
struct RawOutcome {
  int code = 0;  // grpc::StatusCode
  std::string message;
  int responses = 0;  // messages the server sent before the status
};

// Calls `method` ("/duet.v1.ScoringService/Score") on `target` with
// `messages` as the request bytes, exactly as given (they need not parse),
// then half-closes and reads every response: a client of any language that
// sends bytes the server cannot parse. Insecure channel; `timeout` is the
// call's deadline.
RawOutcome RawCall(const std::string& target, const std::string& method,
                   const std::vector<std::string>& messages,
                   absl::Duration timeout = absl::Seconds(20));

// Bytes that parse as no protobuf message: field 1 with wire type 7, which
// does not exist.
inline constexpr char kGarbageBytes[] = "\x0f\xff\xff";
// A length-delimited field 1 that claims 5 bytes and has 2: truncated.
inline constexpr char kTruncatedBytes[] =
    "\x0a\x05"
    "ab";

}  // namespace duet::test

#endif  // DUET_TESTS_TEST_PROCESS_H_
