#include "edge/edge_server.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/mutex.h"
#include "common/base/status_macros.h"
#include "common/base/thread_pool.h"
#include "common/kernels/int8_arithmetic.h"
#include "common/model/model.h"
#include "common/model/model_config.h"
#include "common/obs/energy_meter.h"
#include "common/obs/metrics.h"
#include "edge/edge_metrics.h"
#include "edge/edge_runtime.h"
#include "edge/edge_service_impl.h"
#include "edge/emulated_uplink.h"
#include "edge/file_system.h"
#include "edge/grpc_cloud_client.h"
#include "edge/model_updater.h"
#include "edge/user_model.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace duet::edge {

// Members in dependency order: destroyed in reverse, the updater (whose
// thread reports health to `server`) first.
struct EdgeServer::Impl {
  std::unique_ptr<common::MetricsServer> metrics_server;
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<common::InfoMetrics> info;
  std::unique_ptr<common::ThreadPool> background;  // memo recomputes
  std::unique_ptr<EdgeMetrics> metrics;
  std::unique_ptr<GrpcCloudClient> cloud;
  // Around `cloud` when --uplink_mbps / --uplink_rtt_ms emulate a slow link.
  std::unique_ptr<EmulatedUplink> uplink;
  std::unique_ptr<common::EnergyMeter> energy;
  std::unique_ptr<EdgeServiceImpl> service;
  std::unique_ptr<grpc::Server> server;
  // The running model and user state, and the model updates.
  std::unique_ptr<ModelUpdater> updater;
  int port = 0;
  common::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

namespace {

// The device's id for the cloud's release policy: `<state_dir>/device_id`,
// written once with a random id (it must stay the same across restarts, or
// a staged release would move the device in and out of the canary).
absl::StatusOr<std::string> LoadOrCreateDeviceId(const std::string& state_dir) {
  FileSystem* fs = PosixFileSystem();
  const std::string path = absl::StrCat(state_dir, "/", kDeviceIdFile);
  absl::StatusOr<std::string> stored = fs->ReadFile(path);
  if (stored.ok()) {
    const std::string id(absl::StripAsciiWhitespace(*stored));
    if (!id.empty()) return id;
  } else if (!absl::IsNotFound(stored.status())) {
    return stored.status();
  }
  absl::BitGen rng;
  const std::string id =
      absl::StrFormat("edge-%016x", absl::Uniform<uint64_t>(rng));
  RETURN_IF_ERROR(fs->CreateDirs(state_dir));
  RETURN_IF_ERROR(fs->WriteFileAtomically(path, id + "\n"));
  return id;
}

}  // namespace

EdgeServer::EdgeServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EdgeServer::~EdgeServer() { Shutdown(absl::Seconds(1)); }

int EdgeServer::port() const { return impl_->port; }

absl::Status ValidateEdgeServerOptions(const EdgeServerOptions& o) {
  if (o.model_dir.empty())
    return absl::InvalidArgumentError("--model is required");
  if (o.cloud_target.empty()) {
    return absl::InvalidArgumentError("--cloud is required");
  }
  if (o.state_dir.empty()) {
    return absl::InvalidArgumentError("--state_dir is required");
  }
  if (o.max_candidates < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--max_candidates is %d, must be >= 1", o.max_candidates));
  }
  if (o.default_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--default_timeout_ms must be > 0");
  }
  if (o.cloud_streams < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--cloud_streams is %d, must be >= 1", o.cloud_streams));
  }
  if (o.cloud_stream_max_age < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--cloud_stream_max_age_s must be >= 0 (0: never rotate)");
  }
  if (o.cloud_keepalive_time != absl::ZeroDuration() &&
      (o.cloud_keepalive_time < absl::Seconds(1) ||
       o.cloud_keepalive_timeout < absl::Seconds(1))) {
    return absl::InvalidArgumentError(
        "--cloud_keepalive_time_s must be 0 (off) or >= 1, and "
        "--cloud_keepalive_timeout_s >= 1");
  }
  if (o.relay_cache_items < 0) {
    return absl::InvalidArgumentError("--relay_cache_items must be >= 0");
  }
  if (o.model_check_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--model_check_interval_s must be >= 0 (0: never poll)");
  }
  if (o.device_id.find_first_of(" \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device_id '", o.device_id, "' must not contain whitespace"));
  }
  if (absl::Status link =
          EmulatedUplink::Validate({o.uplink_mbps, o.uplink_rtt});
      !link.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--uplink_mbps / --uplink_rtt_ms: ", link.message()));
  }
  // Named values: the flag, then the parser's message.
  for (const auto& [flag, status] :
       {std::pair{"--user_precision",
                  ParsePrecision(o.user_precision).status()},
        std::pair{"--wire", ParsePrecision(o.wire).status()},
        std::pair{
            "--int8_arithmetic",
            o.int8_arithmetic == "auto"
                ? absl::OkStatus()
                : common::ParseInt8Arithmetic(o.int8_arithmetic).status()}}) {
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EdgeServer>> EdgeServer::Create(
    const EdgeServerOptions& o) {
  RETURN_IF_ERROR(ValidateEdgeServerOptions(o));
  // TLS files first: a typo in a path should not wait for the model load.
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   common::MakeServerCredentials(o.tls));
  RETURN_IF_ERROR(
      common::MakeChannelCredentials(o.cloud_tls, nullptr).status());
  UserModel::Options um_options;
  ASSIGN_OR_RETURN(um_options.precision, ParsePrecision(o.user_precision));
  ASSIGN_OR_RETURN(um_options.wire, ParsePrecision(o.wire));

  auto impl = std::make_unique<Impl>();
  if (!o.metrics_listen.empty()) {
    common::MetricsServer::Options mo;
    mo.listen_address = o.metrics_listen;
    ASSIGN_OR_RETURN(impl->metrics_server, common::MetricsServer::Create(mo));
    impl->registry = impl->metrics_server->registry();
  } else {
    impl->registry = std::make_shared<prometheus::Registry>();
  }
  ASSIGN_OR_RETURN(impl->info, common::InfoMetrics::Create(
                                   impl->registry, {"edge", DUET_VERSION}));

  // The edge loads only edge.safetensors: bottom and user top MLPs.
  common::LoadOptions load;
  load.parts.edge = true;
  load.parts.cloud = false;
  load.parts.user_tables = false;
  load.parts.user_top_int8 = um_options.precision == Precision::kInt8;
  load.verify_checksums = o.verify_checksums;
  const common::Int8KernelReport& kernels = common::Int8Kernels();
  if (o.int8_arithmetic != "auto") {
    ASSIGN_OR_RETURN(load.int8_arithmetic,
                     common::ParseInt8Arithmetic(o.int8_arithmetic));
    if (!kernels.IsExact(*load.int8_arithmetic)) {
      std::fprintf(stderr,
                   "duet-edge: WARNING: --int8_arithmetic %s is not exact on "
                   "this CPU (%s)\n",
                   o.int8_arithmetic.c_str(), kernels.Describe().c_str());
    }
  }
  impl->background = std::make_unique<common::ThreadPool>(1, "edge-memo");
  impl->metrics = std::make_unique<EdgeMetrics>(impl->registry);
  EdgeMetrics* metrics = impl->metrics.get();

  GrpcCloudClient::Options co;
  co.target = o.cloud_target;
  co.streams = o.cloud_streams;
  co.max_stream_age = o.cloud_stream_max_age;
  co.keepalive_time = o.cloud_keepalive_time;
  co.keepalive_timeout = o.cloud_keepalive_timeout;
  co.tls = o.cloud_tls;
  co.on_stream_opened = [metrics] {
    metrics->cloud_streams_opened().Increment();
  };
  co.on_ready_streams = [metrics](int ready) {
    metrics->cloud_streams_ready().Set(ready);
  };
  ASSIGN_OR_RETURN(impl->cloud, GrpcCloudClient::Create(co));
  CloudClient* cloud = impl->cloud.get();
  if (o.uplink_mbps > 0 || o.uplink_rtt > absl::ZeroDuration()) {
    impl->uplink = std::make_unique<EmulatedUplink>(
        cloud, EmulatedUplink::Link{o.uplink_mbps, o.uplink_rtt});
    cloud = impl->uplink.get();
  }

  common::EnergyMeter::Options eo;
  eo.side = "edge";
  eo.registry = impl->registry;
  // Host RAPL measures a server, not a phone: always the device model.
  eo.rapl = common::EnergyMeter::RaplMode::kDisabled;
  eo.device = common::PhoneProfile();
  eo.uplink = common::MmWave5gUplink(
      o.uplink_mbps > 0 ? o.uplink_mbps : common::kDuetUplinkMbps);
  ASSIGN_OR_RETURN(impl->energy, common::EnergyMeter::Create(std::move(eo)));

  ModelUpdater::Options uo;
  uo.model_dir = o.model_dir;
  if (o.device_id.empty()) {
    ASSIGN_OR_RETURN(uo.device_id, LoadOrCreateDeviceId(o.state_dir));
  } else {
    uo.device_id = o.device_id;
  }
  uo.updates = o.model_updates;
  uo.check_interval = o.model_check_interval;
  uo.batch_items = std::min(256, o.max_candidates);
  uo.metrics = metrics;
  EdgeRuntime::Options& ro = uo.runtime;
  ro.load = load;
  ro.user_model = um_options;
  common::ThreadPool* pool = impl->background.get();
  ro.state.executor = [pool](std::function<void()> fn) {
    pool->Schedule(std::move(fn));
  };
  ro.state.on_memo_recompute = [metrics](absl::Duration d) {
    metrics->MemoRecomputed(d);
  };
  ro.store.dir = o.state_dir;
  ro.store.reset = o.reset_state;
  ro.store.snapshot_every = o.snapshot_every;
  ro.recommender.max_candidates = o.max_candidates;
  ro.recommender.relay_cache_items = o.relay_cache_items;
  ro.hooks.metrics = metrics;
  ro.hooks.energy = impl->energy.get();
  ro.cloud = cloud;
  common::InfoMetrics* info = impl->info.get();
  uo.on_model = [info](const duet::v1::ModelConfig& config) {
    info->SetModel(config.name(), absl::StrCat(config.version()),
                   config.signature());
  };
  Impl* raw = impl.get();
  // Health follows the history: NOT_SERVING only while queries wait for a
  // rebuild (a migrated state at start-up); a switch keeps SERVING.
  uo.on_serving = [raw](bool serving) {
    raw->server->GetHealthCheckService()->SetServingStatus(serving);
  };
  ASSIGN_OR_RETURN(impl->updater, ModelUpdater::Create(std::move(uo)));
  const std::shared_ptr<EdgeRuntime> rt = impl->updater->runtime();
  const auto& config = rt->model().config();
  const char* arithmetic =
      rt->model().has_user_top_int8()
          ? common::Int8ArithmeticName(rt->model().int8_arithmetic())
          : "none";
  impl->metrics->SetInt8Arithmetic(arithmetic, kernels.isa,
                                   kernels.implementation);
  impl->service =
      std::make_unique<EdgeServiceImpl>(impl->updater.get(), o.default_timeout);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen, credentials, &impl->port);
  builder.RegisterService(impl->service.get());
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", o.listen, " (address in use or malformed)"));
  }
  // A migrated state: NOT_SERVING (and Recommend UNAVAILABLE) until the
  // scratchpad holds this model's rows; the history's item ids are safe on
  // disk meanwhile.
  impl->updater->Start();
  std::fprintf(
      stderr,
      "duet-edge: %s\n"
      "duet-edge: device %s; model updates %s (status poll %s)\n"
      "duet-edge: model %s, user top MLP %s (int8 arithmetic %s: %s), wire "
      "%s; state %s: %s\n"
      "duet-edge: serving EdgeService on %s, cloud %s (%d streams, "
      "rotated every %s), metrics %s\n",
      impl->updater->startup_report().c_str(),
      rt->recommender().GetState().device_id().c_str(),
      o.model_updates ? "on" : "off (--model_updates=false)",
      o.model_check_interval > absl::ZeroDuration()
          ? absl::StrCat("every ", absl::FormatDuration(o.model_check_interval))
                .c_str()
          : "off",
      common::ModelLabel(config).c_str(), o.user_precision.c_str(), arithmetic,
      kernels.Describe().c_str(), o.wire.c_str(), o.state_dir.c_str(),
      rt->store().recovery_report().c_str(),
      common::WithBoundPort(o.listen, impl->port).c_str(),
      o.cloud_target.c_str(), o.cloud_streams,
      o.cloud_stream_max_age > absl::ZeroDuration()
          ? absl::FormatDuration(o.cloud_stream_max_age).c_str()
          : "never",
      impl->metrics_server == nullptr
          ? "disabled"
          : absl::StrCat("http://", impl->metrics_server->bound_address(),
                         "/metrics")
                .c_str());
  std::fprintf(stderr,
               "duet-edge: EdgeService: %s\nduet-edge: cloud link: %s\n",
               common::DescribeServerTls(o.tls).c_str(),
               common::DescribeClientTls(o.cloud_tls).c_str());
  return std::unique_ptr<EdgeServer>(new EdgeServer(std::move(impl)));
}

void EdgeServer::Shutdown(absl::Duration grace) {
  {
    common::MutexLock lock(&impl_->mu);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
  }
  impl_->server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  impl_->updater.reset();
  impl_->uplink.reset();
  impl_->cloud.reset();
}

void EdgeServer::Wait() { impl_->server->Wait(); }

}  // namespace duet::edge
