#include "tools/cli_args.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace duet::tools {

absl::StatusOr<CliArgs> CliArgs::Parse(
    const std::vector<std::string>& args,
    const std::vector<std::string>& value_flags,
    const std::vector<std::string>& bool_flags) {
  auto contains = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  CliArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.positional_.insert(out.positional_.end(), args.begin() + i + 1,
                             args.end());
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      out.positional_.push_back(a);
      continue;
    }
    if (a[1] != '-') {
      if (a != "-h" || !contains(bool_flags, "help")) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
      }
      out.values_["help"] = "true";
      continue;
    }
    std::string name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (contains(bool_flags, name)) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(absl::StrCat(
            "--", name, " takes no value or true|false, got '", value, "'"));
      }
      out.values_[name] = has_value ? value : "true";
    } else if (contains(value_flags, name)) {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("--", name, " needs a value"));
        }
        value = args[++i];
      }
      out.values_[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  return out;
}

std::string CliArgs::Get(const std::string& flag,
                         const std::string& def) const {
  auto it = values_.find(flag);
  return it == values_.end() ? def : it->second;
}

absl::StatusOr<double> CliArgs::GetDouble(const std::string& flag,
                                          double def) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return def;
  double v;
  if (!absl::SimpleAtod(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " expects a number, got '", it->second, "'"));
  }
  return v;
}

absl::StatusOr<int64_t> CliArgs::GetInt(const std::string& flag,
                                        int64_t def) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return def;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " expects an integer, got '", it->second, "'"));
  }
  return v;
}

absl::StatusOr<uint64_t> CliArgs::GetUint(const std::string& flag,
                                          uint64_t def) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return def;
  uint64_t v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " expects a non-negative integer, got '", it->second, "'"));
  }
  return v;
}

}  // namespace duet::tools
