// The command-line contract (DESIGN.md §8) of the binaries whose flags are
// absl flags: duet-cloud, duet-edge, duet-loadgen and duet-health-probe.
#ifndef DUET_COMMON_CLI_FLAGS_H_
#define DUET_COMMON_CLI_FLAGS_H_

#include <initializer_list>

#include "absl/strings/string_view.h"

namespace duet::common {

// Parses argv into the absl flags, or exits:
//   --help, -h, --helpshort (the flags of `flags_file`), --helpfull (every
//   flag linked in), --help=SUBSTRING, --version: usage on stdout, exit 0;
//   an unknown flag, a malformed or missing value, or a positional argument
//   (none of these binaries takes one): an "ERROR: ..." line naming it and a
//   pointer to --help on stderr, exit 2.
// `usage` heads --help; `flags_files` are __FILE__ of the files that define
// the binary's flags (its main and e.g. common/rpc/server_flags.cc). Call
// once, first in main, before any thread starts.
void ParseFlagsOrExit(int argc, char** argv, absl::string_view usage,
                      std::initializer_list<absl::string_view> flags_files);
inline void ParseFlagsOrExit(int argc, char** argv, absl::string_view usage,
                             absl::string_view flags_file) {
  ParseFlagsOrExit(argc, argv, usage, {flags_file});
}

// For what the parser cannot see (a required flag missing, values that do not
// fit together): "ERROR: <message>" and the pointer to --help on stderr, then
// exit 2. Call after ParseFlagsOrExit.
[[noreturn]] void ExitWithUsageError(absl::string_view message);

}  // namespace duet::common

#endif  // DUET_COMMON_CLI_FLAGS_H_
