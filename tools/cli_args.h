// Minimal command-line parsing for the tools whose documented flags contain
// hyphens (DESIGN.md §8: `--rows-scale`), which absl flags cannot name:
// `--name value`, `--name=value`, boolean `--name`, `-h` for `--help`, `--`
// ending the flags, and positional arguments.
#ifndef DUET_TOOLS_CLI_ARGS_H_
#define DUET_TOOLS_CLI_ARGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace duet::tools {

class CliArgs {
 public:
  // `value_flags` take a value; `bool_flags` do not. `-h` sets "help" when
  // that is one of `bool_flags`. Any other --flag or -x is an
  // INVALID_ARGUMENT error naming it; "-" alone and everything after "--"
  // are positional.
  static absl::StatusOr<CliArgs> Parse(
      const std::vector<std::string>& args,
      const std::vector<std::string>& value_flags,
      const std::vector<std::string>& bool_flags);

  bool Has(const std::string& flag) const { return values_.contains(flag); }
  std::string Get(const std::string& flag, const std::string& def = "") const;
  absl::StatusOr<double> GetDouble(const std::string& flag, double def) const;
  absl::StatusOr<int64_t> GetInt(const std::string& flag, int64_t def) const;
  absl::StatusOr<uint64_t> GetUint(const std::string& flag, uint64_t def) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  absl::flat_hash_map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace duet::tools

#endif  // DUET_TOOLS_CLI_ARGS_H_
