// The signal lifecycle both daemons share: SIGTERM/SIGINT stop them (drain,
// then exit 0), SIGHUP runs a callback (duet-cloud: check for a new model).
#ifndef DUET_COMMON_RPC_DAEMON_SIGNALS_H_
#define DUET_COMMON_RPC_DAEMON_SIGNALS_H_

#include <functional>
#include <string>

namespace duet::common {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread. Threads created
// afterwards inherit the mask, so only WaitForStopSignal receives them: call
// it first in main, before any thread exists. Idempotent.
void BlockDaemonSignals();

// Waits for SIGTERM or SIGINT and returns its name ("SIGTERM"); every SIGHUP
// meanwhile runs `on_hangup` (when set) and the wait goes on.
std::string WaitForStopSignal(const std::function<void()>& on_hangup);

}  // namespace duet::common

#endif  // DUET_COMMON_RPC_DAEMON_SIGNALS_H_
