// The subcommands of duet-model that evaluate a model (compare, score), and
// the exit conventions all subcommands share (DESIGN.md §8).
#ifndef DUET_TOOLS_MODEL_COMMANDS_H_
#define DUET_TOOLS_MODEL_COMMANDS_H_

#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "tools/cli_args.h"

namespace duet::tools {

// Prints the error and returns exit status 1 (a failed check or error).
inline int Fail(const absl::Status& status) {
  std::cerr << "duet-model: " << status << std::endl;
  return 1;
}

// The same two lines as the absl-flag binaries (common/cli/flags.h); exit
// status 2 (bad usage).
inline int Usage(const std::string& message) {
  std::cerr << "ERROR: " << message << "\nTry 'duet-model --help' for usage."
            << std::endl;
  return 2;
}

// duet-model compare DIR: random users, monolithic vs split fp32 vs int8.
int Compare(const CliArgs& args);
// duet-model score DIR --queries FILE --out FILE: CTRs of recorded queries.
int Score(const CliArgs& args);

}  // namespace duet::tools

#endif  // DUET_TOOLS_MODEL_COMMANDS_H_
