#include "common/cli/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace duet::common {
namespace {

constexpr int kUsageError = 2;

// argv[0]'s basename, for messages.
std::string& ProgramName() {
  static auto* name = new std::string();  // never destroyed: atexit uses it
  return *name;
}
// True while absl parses the command line; see ExitOnBadFlag.
bool parsing = false;

void PrintHelpHint() {
  std::fprintf(stderr, "Try '%s --help' for usage.\n", ProgramName().c_str());
}

// absl 20220623 has no parse that returns its errors (ParseAbseilFlagsOnly
// came later): on a bad flag it prints "ERROR: ..." lines to stderr and calls
// std::exit(1). Registered last, this handler runs first and turns that exit
// into the usage-error code.
void ExitOnBadFlag() {
  if (!parsing) return;
  std::fflush(stdout);
  PrintHelpHint();
  std::_Exit(kUsageError);
}

// Flag locations relative to the source tree in --help: "cloud/main.cc".
std::string NormalizeFilename(absl::string_view file) {
  absl::ConsumePrefix(&file, DUET_SOURCE_DIR "/");
  return std::string(file);
}

// argv with "-h" spelled "--help", which absl does not know; "-h" as the
// value of the flag before it ("--model -h") and after "--" stays as it is.
std::vector<char*> WithLongHelp(int argc, char** argv) {
  static char long_help[] = "--help";
  std::vector<char*> args(argv, argv + argc);
  bool is_value = false;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (is_value) {
      is_value = false;
      continue;
    }
    if (arg == "--") break;
    if (arg == "-h") {
      args[i] = long_help;
      continue;
    }
    // "--name" or "-name" of a non-boolean flag takes the next argument.
    if (absl::ConsumePrefix(&arg, "-") && !absl::StrContains(arg, '=')) {
      absl::ConsumePrefix(&arg, "-");
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(arg);
      is_value = flag != nullptr && !flag->IsOfType<bool>();
    }
  }
  return args;
}

}  // namespace

void ParseFlagsOrExit(int argc, char** argv, absl::string_view usage,
                      std::initializer_list<absl::string_view> flags_files) {
  absl::string_view program = argv[0];
  if (const size_t slash = program.rfind('/');
      slash != absl::string_view::npos) {
    program.remove_prefix(slash + 1);
  }
  ProgramName() = std::string(program);
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  std::vector<std::string> files;
  for (absl::string_view f : flags_files) {
    files.emplace_back(NormalizeFilename(f));
  }
  config.contains_help_flags = [files](absl::string_view file) {
    return std::find(files.begin(), files.end(), file) != files.end();
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.contains_helppackage_flags = config.contains_help_flags;
  config.version_string = [] {
    return absl::StrCat(ProgramName(), " ", DUET_VERSION, "\n");
  };
  config.normalize_filename = NormalizeFilename;
  absl::SetFlagsUsageConfig(config);

  std::vector<char*> args = WithLongHelp(argc, argv);
  static const bool registered = std::atexit(ExitOnBadFlag) == 0;
  (void)registered;
  parsing = true;
  const std::vector<char*> positional =
      absl::flags_internal::ParseCommandLineImpl(
          static_cast<int>(args.size()), args.data(),
          absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
          absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
          absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  parsing = false;

  // absl exits 1 after --help; scripts running `X --help && ...` need 0.
  if (absl::flags_internal::HandleUsageFlags(
          std::cout, absl::ProgramUsageMessage()) != -1) {
    std::cout.flush();
    std::exit(0);
  }
  if (positional.size() > 1) {
    ExitWithUsageError(absl::StrCat("Unexpected argument '", positional[1],
                                    "' (", ProgramName(),
                                    " takes flags only)"));
  }
}

void ExitWithUsageError(absl::string_view message) {
  std::fprintf(stderr, "ERROR: %s\n", std::string(message).c_str());
  PrintHelpHint();
  std::exit(kUsageError);
}

}  // namespace duet::common
