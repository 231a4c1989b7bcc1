#include "tools/loadgen/edge_energy_probe.h"

#include <curl/curl.h>

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace duet::loadgen {
namespace {

constexpr absl::string_view kEnergy = "duet_energy_joules_total";
constexpr absl::string_view kQueries = "duet_queries_total";

// One sample line of the Prometheus text format:
//   name{label="value",...} value [timestamp]
// Hand-written: no Debian-packaged C++ library reads the format
// (prometheus-cpp only writes it).
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

absl::StatusOr<Sample> ParseSample(absl::string_view line) {
  const auto malformed = [line](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed metrics line (", what, "): ", line));
  };
  Sample s;
  const size_t name_end = line.find_first_of("{ ");
  if (name_end == absl::string_view::npos) return malformed("no value");
  s.name = std::string(line.substr(0, name_end));
  absl::string_view rest = line.substr(name_end);
  if (absl::ConsumePrefix(&rest, "{")) {
    while (!absl::ConsumePrefix(&rest, "}")) {
      const size_t eq = rest.find("=\"");
      if (eq == absl::string_view::npos) return malformed("label");
      std::string key(absl::StripAsciiWhitespace(rest.substr(0, eq)));
      rest.remove_prefix(eq + 2);
      std::string value;
      while (!rest.empty() && rest.front() != '"') {
        if (rest.front() == '\\' && rest.size() > 1) {
          rest.remove_prefix(1);
          value += rest.front() == 'n' ? '\n' : rest.front();
        } else {
          value += rest.front();
        }
        rest.remove_prefix(1);
      }
      if (!absl::ConsumePrefix(&rest, "\"")) return malformed("label value");
      s.labels[key] = std::move(value);
      absl::ConsumePrefix(&rest, ",");
    }
  }
  const std::vector<absl::string_view> fields =
      absl::StrSplit(rest, ' ', absl::SkipEmpty());
  if (fields.empty() || !absl::SimpleAtod(fields[0], &s.value)) {
    return malformed("value");
  }
  return s;
}

size_t AppendToString(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// The body of GET `url`; Unavailable on any failure or a status other than
// 200.
absl::StatusOr<std::string> HttpGet(const std::string& url,
                                    absl::Duration timeout) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(),
                                                           curl_easy_cleanup);
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  std::string body;
  char error[CURL_ERROR_SIZE] = "";
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // the driver has threads
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");  // as Prometheus scrapes
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("cannot scrape ", url, ": ",
                     error[0] != '\0' ? error : curl_easy_strerror(rc)));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    return absl::UnavailableError(
        absl::StrCat("cannot scrape ", url, ": HTTP status ", status));
  }
  return body;
}

}  // namespace

absl::StatusOr<EdgeCounters> ParseEdgeCounters(absl::string_view text) {
  EdgeCounters counters;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, kEnergy) && !absl::StartsWith(line, kQueries)) {
      continue;
    }
    absl::StatusOr<Sample> s = ParseSample(line);
    if (!s.ok()) return s.status();
    const auto side = s->labels.find("side");
    if (side == s->labels.end() || side->second != "edge") continue;
    if (s->name == kEnergy) {
      counters.joules_by_source[s->labels["source"]] += s->value;
    } else if (s->name == kQueries) {
      counters.queries += s->value;
    }
  }
  if (counters.joules_by_source.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no ", kEnergy,
                     "{side=\"edge\"} in the metrics: not a "
                     "duet-edge's /metrics?"));
  }
  return counters;
}

absl::StatusOr<EdgeEnergyPerQuery> EnergyPerQuery(const EdgeCounters& before,
                                                  const EdgeCounters& after) {
  const double queries = after.queries - before.queries;
  bool backwards = queries < 0;
  for (const auto& [source, joules] : before.joules_by_source) {
    const auto it = after.joules_by_source.find(source);
    backwards |= it == after.joules_by_source.end() || it->second < joules;
  }
  if (backwards) {
    return absl::FailedPreconditionError(
        "duet-edge's counters went backwards during the run (did it "
        "restart?)");
  }
  if (queries < 1) {
    return absl::FailedPreconditionError(
        "duet-edge served no queries during the run");
  }
  EdgeEnergyPerQuery out;
  out.queries = std::llround(queries);
  for (const auto& [source, joules] : after.joules_by_source) {
    const auto it = before.joules_by_source.find(source);
    const double delta =
        joules - (it == before.joules_by_source.end() ? 0.0 : it->second);
    out.joules_by_source[source] = delta / queries;
    out.joules += delta / queries;
  }
  return out;
}

std::string MetricsUrl(absl::string_view address) {
  const size_t scheme = address.find("://");
  if (scheme == absl::string_view::npos) {
    return absl::StrCat("http://", address, "/metrics");
  }
  if (address.find('/', scheme + 3) == absl::string_view::npos) {
    return absl::StrCat(address, "/metrics");
  }
  return std::string(address);
}

EdgeEnergyProbe::EdgeEnergyProbe(Options options)
    : options_(std::move(options)), url_(MetricsUrl(options_.address)) {}

absl::StatusOr<EdgeCounters> EdgeEnergyProbe::Scrape() const {
  absl::SleepFor(options_.publish_delay);
  absl::StatusOr<std::string> body = HttpGet(url_, options_.timeout);
  if (!body.ok()) return body.status();
  absl::StatusOr<EdgeCounters> counters = ParseEdgeCounters(*body);
  if (!counters.ok()) {
    return absl::Status(counters.status().code(),
                        absl::StrCat(url_, ": ", counters.status().message()));
  }
  return counters;
}

absl::Status EdgeEnergyProbe::Begin() {
  absl::StatusOr<EdgeCounters> before = Scrape();
  if (!before.ok()) return before.status();
  before_ = *std::move(before);
  begun_ = true;
  return absl::OkStatus();
}

absl::StatusOr<EdgeEnergyPerQuery> EdgeEnergyProbe::End() {
  if (!begun_) {
    return absl::FailedPreconditionError("EdgeEnergyProbe::End before Begin");
  }
  absl::StatusOr<EdgeCounters> after = Scrape();
  if (!after.ok()) return after.status();
  return EnergyPerQuery(before_, *after);
}

}  // namespace duet::loadgen
