#include "common/obs/metrics.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace duet::common {
namespace {

struct HostPort {
  std::string host;  // without IPv6 brackets
  int port = 0;
};

absl::StatusOr<HostPort> ParseListenAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics listen address \"", address, "\" is not host:port"));
  }
  HostPort hp;
  absl::string_view host = address.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics listen address \"", address, "\": unbalanced [ ]"));
    }
    host = host.substr(1, host.size() - 2);
  }
  hp.host = std::string(host);
  if (!absl::SimpleAtoi(address.substr(colon + 1), &hp.port) || hp.port < 0 ||
      hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", address,
                     "\": port must be an integer in [0, 65535]"));
  }
  return hp;
}

// civetweb only reports "possible problem binding to port". Repeating the
// bind ourselves (with civetweb's SO_REUSEADDR) recovers the errno, so the
// caller learns whether the port is taken, privileged or the host not local.
absl::Status ExplainBindFailure(const std::string& address, const HostPort& hp,
                                absl::string_view civetweb_message) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const std::string port = absl::StrCat(hp.port);
  const int gai = getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &result);
  if (gai != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serve metrics on ", address, ": host \"", hp.host,
                     "\" does not resolve: ", gai_strerror(gai)));
  }
  int bind_errno = 0;
  const int fd =
      socket(result->ai_family, result->ai_socktype, result->ai_protocol);
  if (fd < 0) {
    bind_errno = errno;
  } else {
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, result->ai_addr, result->ai_addrlen) != 0) bind_errno = errno;
    close(fd);
  }
  freeaddrinfo(result);
  const std::string prefix = absl::StrCat("cannot serve metrics on ", address);
  switch (bind_errno) {
    case EADDRINUSE:
      return absl::UnavailableError(absl::StrCat(
          prefix, ": address already in use (another process listens there)"));
    case EACCES:
      return absl::PermissionDeniedError(
          absl::StrCat(prefix,
                       ": permission denied (ports below 1024 need "
                       "CAP_NET_BIND_SERVICE)"));
    case EADDRNOTAVAIL:
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, ": not an address of this machine"));
    case 0:
      return absl::UnavailableError(
          absl::StrCat(prefix, ": ", civetweb_message));
    default:
      return absl::UnavailableError(
          absl::StrCat(prefix, ": ", std::strerror(bind_errno)));
  }
}

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return true;
}

// Fields of /proc/<pid>/stat after "(comm)"; comm may hold spaces and ')',
// so split after the last ')'. Index 0 is field 3 (state) of proc(5).
bool ReadStatFields(const std::string& path, std::vector<std::string>* fields) {
  std::string stat;
  if (!ReadWholeFile(path, &stat)) return false;
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return false;
  *fields = absl::StrSplit(absl::string_view(stat).substr(paren + 1), ' ',
                           absl::SkipWhitespace());
  return true;
}

// /proc/<pid>/statm: "size resident shared text lib data dt", in pages.
bool ReadStatm(const std::string& path, uint64_t* size_pages,
               uint64_t* resident_pages) {
  std::string statm;
  if (!ReadWholeFile(path, &statm)) return false;
  std::vector<absl::string_view> pages =
      absl::StrSplit(statm, ' ', absl::SkipWhitespace());
  return pages.size() >= 2 && absl::SimpleAtoi(pages[0], size_pages) &&
         absl::SimpleAtoi(pages[1], resident_pages);
}

constexpr size_t kStatField(size_t proc5_field) { return proc5_field - 3; }

double ClockTicksPerSecond() {
  return static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ComputeStartTimeSeconds(const std::string& proc_root) {
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  std::vector<std::string> fields;
  uint64_t start_ticks = 0;
  if (!ReadStatFields(proc_root + "/self/stat", &fields) ||
      fields.size() <= kStatField(22) ||
      !absl::SimpleAtoi(fields[kStatField(22)], &start_ticks)) {
    return now;
  }
  std::string stat;
  if (!ReadWholeFile(proc_root + "/stat", &stat)) return now;
  for (absl::string_view line : absl::StrSplit(stat, '\n')) {
    uint64_t btime = 0;
    if (absl::ConsumePrefix(&line, "btime ") &&
        absl::SimpleAtoi(line, &btime)) {
      return static_cast<double>(btime) + start_ticks / ClockTicksPerSecond();
    }
  }
  return now;
}

prometheus::MetricFamily OneValueFamily(std::string name, std::string help,
                                        prometheus::MetricType type,
                                        double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

std::vector<double> OneTwoFiveBuckets(int min_exponent, int max_exponent) {
  // Powers of ten up to 1e22 are exact doubles, so m / 10^k and m * 10^k are
  // correctly rounded: each bound is the double nearest m·10^e.
  auto pow10 = [](int k) {
    double p = 1.0;
    for (int i = 0; i < k; ++i) p *= 10.0;
    return p;
  };
  auto value = [&](int m, int e) {
    return e < 0 ? m / pow10(-e) : m * pow10(e);
  };
  std::vector<double> bounds;
  for (int e = min_exponent; e < max_exponent; ++e) {
    for (int m : {1, 2, 5}) bounds.push_back(value(m, e));
  }
  bounds.push_back(value(1, max_exponent));
  return bounds;
}

std::vector<double> LatencyBucketsSeconds() { return OneTwoFiveBuckets(-5, 1); }

std::string WithBoundPort(absl::string_view address, int port) {
  const size_t colon = address.rfind(':');
  int old_port = 0;
  // Not "[::1]" (a colon of the host) nor "unix:/path" (no port at all).
  if (colon == absl::string_view::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &old_port)) {
    return std::string(address);
  }
  return absl::StrCat(address.substr(0, colon + 1), port);
}

// ---------------------------------------------------------------- server

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Create(
    const Options& options) {
  auto host_port = ParseListenAddress(options.listen_address);
  if (!host_port.ok()) return host_port.status();
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics server needs num_threads >= 1, got ", options.num_threads));
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(
        options.listen_address, static_cast<size_t>(options.num_threads));
  } catch (const std::exception& e) {
    return ExplainBindFailure(options.listen_address, *host_port, e.what());
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::InternalError(absl::StrCat(
        "metrics exposer on ", options.listen_address, " reports no port"));
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(
      options.listen_address, std::move(exposer), ports.front()));
}

MetricsServer::MetricsServer(std::string listen_address,
                             std::unique_ptr<prometheus::Exposer> exposer,
                             int bound_port)
    : listen_address_(std::move(listen_address)),
      registry_(std::make_shared<prometheus::Registry>()),
      process_collector_(std::make_shared<ProcessCollector>()),
      exposer_(std::move(exposer)),
      bound_port_(bound_port) {
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(process_collector_);
}

// The exposer goes first so no scrape runs while the collectables die.
MetricsServer::~MetricsServer() { exposer_.reset(); }

void MetricsServer::RegisterCollectable(
    const std::weak_ptr<prometheus::Collectable>& c) {
  exposer_->RegisterCollectable(c);
}

// ------------------------------------------------------- process collector

ProcessCollector::ProcessCollector(std::string proc_root)
    : proc_root_(std::move(proc_root)),
      start_time_seconds_(ComputeStartTimeSeconds(proc_root_)) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  std::vector<std::string> fields;
  uint64_t utime = 0, stime = 0;
  if (ReadStatFields(proc_root_ + "/self/stat", &fields) &&
      fields.size() > kStatField(15) &&
      absl::SimpleAtoi(fields[kStatField(14)], &utime) &&
      absl::SimpleAtoi(fields[kStatField(15)], &stime)) {
    families.push_back(OneValueFamily(
        "process_cpu_seconds_total", "Total user and system CPU time spent.",
        MetricType::Counter, (utime + stime) / ClockTicksPerSecond()));
  }
  uint64_t size_pages = 0, resident_pages = 0;
  if (ReadStatm(proc_root_ + "/self/statm", &size_pages, &resident_pages)) {
    const double page_bytes = static_cast<double>(sysconf(_SC_PAGESIZE));
    families.push_back(OneValueFamily(
        "process_resident_memory_bytes", "Resident memory size in bytes.",
        MetricType::Gauge, resident_pages * page_bytes));
    families.push_back(OneValueFamily(
        "process_virtual_memory_bytes", "Virtual memory size in bytes.",
        MetricType::Gauge, size_pages * page_bytes));
  }
  families.push_back(
      OneValueFamily("process_start_time_seconds",
                     "Start time of the process since unix epoch in seconds.",
                     MetricType::Gauge, start_time_seconds_));
  return families;
}

// ------------------------------------------------------------ info gauges

absl::StatusOr<std::unique_ptr<InfoMetrics>> InfoMetrics::Create(
    std::shared_ptr<prometheus::Registry> registry, const Options& options) {
  if (registry == nullptr) {
    return absl::InvalidArgumentError("InfoMetrics needs a registry");
  }
  if (options.side.empty() || options.version.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("InfoMetrics needs a side and a version, got side=\"",
                     options.side, "\" version=\"", options.version, "\""));
  }
  prometheus::Family<prometheus::Gauge>* model_family = nullptr;
  try {
    prometheus::BuildGauge()
        .Name("duet_build_info")
        .Help("Build of this process (value 1; the data is in the labels).")
        .Register(*registry)
        .Add({{"version", options.version}, {"side", options.side}})
        .Set(1);
    model_family = &prometheus::BuildGauge()
                        .Name("duet_model_info")
                        .Help(
                            "Model being served (value 1; the data is in "
                            "the labels).")
                        .Register(*registry);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot register duet_build_info/duet_model_info: ", e.what()));
  }
  return std::unique_ptr<InfoMetrics>(
      new InfoMetrics(std::move(registry), model_family));
}

InfoMetrics::InfoMetrics(std::shared_ptr<prometheus::Registry> registry,
                         prometheus::Family<prometheus::Gauge>* model_family)
    : registry_(std::move(registry)), model_family_(model_family) {}

void InfoMetrics::SetModel(const std::string& name, const std::string& version,
                           const std::string& signature) {
  common::MutexLock lock(&mu_);
  if (model_gauge_ != nullptr) model_family_->Remove(model_gauge_);
  model_gauge_ = &model_family_->Add(
      {{"name", name}, {"version", version}, {"signature", signature}});
  model_gauge_->Set(1);
}

}  // namespace duet::common
