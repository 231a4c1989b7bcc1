#include "common/rpc/daemon_signals.h"

#include <pthread.h>
#include <signal.h>

namespace duet::common {

namespace {
sigset_t DaemonSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}
}  // namespace

void BlockDaemonSignals() {
  const sigset_t signals = DaemonSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

std::string WaitForStopSignal(const std::function<void()>& on_hangup) {
  const sigset_t signals = DaemonSignals();
  int sig = 0;
  while (sigwait(&signals, &sig) != 0 || sig == SIGHUP) {
    if (sig == SIGHUP && on_hangup) on_hangup();
    sig = 0;
  }
  return sig == SIGTERM ? "SIGTERM" : "SIGINT";
}

}  // namespace duet::common
