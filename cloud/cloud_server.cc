#include "cloud/cloud_server.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/model/model_config.h"
#include "common/rpc/daemon_signals.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace duet::cloud {
namespace {

constexpr char kServiceName[] = "duet.v1.ScoringService";
constexpr char kVersion[] = DUET_VERSION;

void Log(const std::string& line) {
  std::fprintf(stderr, "duet-cloud: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CloudServer>> CloudServer::Create(
    CloudServerOptions options) {
  // Every thread created from here on inherits the blocked mask, so the
  // signals wait for Run()'s sigwait instead of killing the process.
  common::BlockDaemonSignals();
  auto server =
      std::unique_ptr<CloudServer>(new CloudServer(std::move(options)));
  RETURN_IF_ERROR(server->Init());
  return server;
}

absl::Status CloudServer::Init() {
  const CloudServerOptions& o = options_;
  std::shared_ptr<prometheus::Registry> registry;
  if (!o.metrics_listen.empty()) {
    common::MetricsServer::Options mo;
    mo.listen_address = o.metrics_listen;
    ASSIGN_OR_RETURN(metrics_server_, common::MetricsServer::Create(mo));
    registry = metrics_server_->registry();
    Log(absl::StrCat("metrics on http://", metrics_server_->bound_address(),
                     "/metrics"));
  } else {
    registry = std::make_shared<prometheus::Registry>();
  }
  ASSIGN_OR_RETURN(info_, common::InfoMetrics::Create(
                              registry, {/*side=*/"cloud", kVersion}));
  common::EnergyMeter::Options eo;
  eo.side = "cloud";
  eo.registry = registry;
  ASSIGN_OR_RETURN(energy_, common::EnergyMeter::Create(std::move(eo)));
  Log(absl::StrCat("energy source: ", energy_->source(),
                   energy_->rapl_unavailable_reason().empty()
                       ? ""
                       : " (" + energy_->rapl_unavailable_reason() + ")"));

  common::LoadOptions lo;
  lo.parts.edge = true;  // MonolithicScore runs the user side too, in fp32
  lo.parts.user_top_int8 = false;
  lo.parts.cloud = true;
  lo.parts.user_tables = true;  // relay, GetItemEmbeddings, MonolithicScore
  lo.verify_checksums = o.verify_checksums;
  const absl::Time load_start = absl::Now();
  ASSIGN_OR_RETURN(const std::string first_dir,
                   InitialModelDir(o.model_dir, o.core.versions));
  ASSIGN_OR_RETURN(std::unique_ptr<common::Model> model,
                   common::Model::Load(first_dir, lo));
  Log(absl::StrFormat("loaded %s from %s in %.2f s",
                      common::ModelLabel(model->config()), first_dir,
                      absl::ToDoubleSeconds(absl::Now() - load_start)));
  info_->SetModel(model->config().name(),
                  absl::StrCat(model->config().version()),
                  model->config().signature());

  ScoringCoreOptions co = o.core;
  co.registry = registry;
  co.on_item_table_built = [](const ModelRuntime::ItemTableStatus& s) {
    Log(absl::StrFormat(
        "item table of v%d: %s in %.2f s: %s", s.version,
        s.status.ok() ? "built" : "NOT built", s.build_seconds,
        s.status.ok() ? s.plan.DebugString() : s.status.ToString()));
  };
  const absl::Time calib_start = absl::Now();
  ASSIGN_OR_RETURN(core_, ScoringCore::Create(std::move(model), co));
  Log(absl::StrFormat(
      "%d workers, max %d in flight, max %d candidates, item "
      "cache %d entries",
      core_->options().workers, core_->options().max_inflight,
      core_->options().max_candidates, core_->options().item_cache_entries));
  Log(core_->placement().DebugString());
  const LookupEngine& engine = core_->runtime()->lookup_engine();
  Log(engine.precision() == ItemEmbeddingPrecision::kInt8
          ? absl::StrFormat("item embeddings int8 (quantized at load in %.2f "
                            "s; the monolithic baseline reads fp32)",
                            engine.quantize_seconds())
          : std::string("item embeddings fp32"));
  Log(core_->runtime()->CacheDebugString());
  Log(core_->runtime()->WarmupDebugString());
  Log(core_->runtime()->ItemTableDebugString());
  Log(absl::StrFormat("strategy selector (%.2f s):\n%s",
                      absl::ToDoubleSeconds(absl::Now() - calib_start),
                      core_->selector().DebugString()));

  service_ = std::make_unique<ScoringServiceImpl>(core_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   common::MakeServerCredentials(o.tls));
  Log(common::DescribeServerTls(o.tls));
  builder.AddListeningPort(o.listen, credentials, &port_);
  builder.SetMaxReceiveMessageSize(o.max_message_bytes);
  builder.SetMaxSendMessageSize(o.max_message_bytes);
  // Accept the edges' keepalive PINGs (duet-edge --cloud_keepalive_time_s,
  // >= 1 s), also on a connection without calls: by default a server takes
  // one PING per 5 minutes without data and answers the third too frequent
  // one with GOAWAY "too_many_pings", cutting every stream of the edge.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (o.max_connection_age_s > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               o.max_connection_age_s * 1000);
    // The grace outlasts the edge's stream rotation (--cloud_stream_max_age_s,
    // default 60 s): the edge replaces its streams itself, so the connection
    // is closed only once no stream of it is left and no query is cut.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               o.max_connection_age_grace_s * 1000);
  }
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", o.listen,
                     " (address in use or not a valid HOST:PORT)"));
  }
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
  Log(absl::StrCat("serving ", kServiceName, " on ",
                   common::WithBoundPort(o.listen, port_)));

  ModelWatcher::Options wo;
  wo.dir = o.model_dir;
  wo.poll_interval = absl::Milliseconds(o.reload_poll_ms);
  wo.load = lo;
  wo.release_policy_path = o.release_policy;
  wo.log = Log;
  wo.on_versions_changed = [this] { OnVersionsChanged(); };
  ASSIGN_OR_RETURN(watcher_, ModelWatcher::Create(core_.get(), std::move(wo)));
  // The release policy and the other versions the policy keeps, before the
  // first poll interval passes.
  watcher_->CheckNow(/*force=*/false);
  OnVersionsChanged();
  return absl::OkStatus();
}

void CloudServer::OnVersionsChanged() {
  const common::Model& newest = core_->runtime()->model();
  info_->SetModel(newest.config().name(),
                  absl::StrCat(newest.config().version()),
                  newest.config().signature());
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  common::MutexLock lock(&health_mu_);
  std::vector<std::string> names;
  for (const ServedModels::Info& v : core_->served().List()) {
    names.push_back(absl::StrCat(kServiceName, "/v", v.version));
  }
  for (const std::string& old : version_health_) {
    if (std::find(names.begin(), names.end(), old) == names.end()) {
      health->SetServingStatus(old, false);
    }
  }
  for (const std::string& name : names) {
    health->SetServingStatus(name, !shut_down_);
  }
  version_health_ = std::move(names);
}

void CloudServer::Run() {
  const std::string sig = common::WaitForStopSignal([this] {
    Log("received SIGHUP, checking the model directory for a new version");
    watcher_->Trigger();
  });
  Log(absl::StrCat("received ", sig, ", draining (grace ",
                   absl::FormatDuration(options_.shutdown_grace), ")"));
  Shutdown();
}

void CloudServer::Shutdown() {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  const absl::Time deadline = absl::Now() + options_.shutdown_grace;
  const int left = core_->Drain(deadline);
  if (left > 0) {
    Log(absl::StrCat(left, " queries still in flight after the grace period"));
  }
  // Let the last responses be written, then cancel idle streams.
  const absl::Time stop =
      std::min(deadline, absl::Now() + absl::Milliseconds(500));
  server_->Shutdown(absl::ToChronoTime(std::max(stop, absl::Now())));
  Log("stopped");
}

CloudServer::~CloudServer() {
  Shutdown();
  server_.reset();
  service_.reset();
  watcher_.reset();  // no reload into a core that is going away
  core_.reset();
}

}  // namespace duet::cloud
