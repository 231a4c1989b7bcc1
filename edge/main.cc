// duet-edge: the on-device daemon of the Duet split recommender (DESIGN.md
// §3). Turns flags into EdgeServerOptions and runs the server until SIGTERM
// or SIGINT.
#include <malloc.h>

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "common/cli/flags.h"
#include "common/rpc/daemon_signals.h"
#include "common/rpc/server_flags.h"
#include "edge/edge_server.h"

ABSL_FLAG(std::string, cloud, "",
          "duet-cloud gRPC target: host:port, dns:///name:port or "
          "ipv4:a:p,b:p (round_robin over the addresses); required.");
ABSL_FLAG(int, cloud_streams, 4,
          "Concurrent ScoringSession streams to the cloud (>= 1). Queries go "
          "to the streams in turn; round_robin places each stream on a "
          "backend, so this many streams is what spreads queries over up to "
          "this many cloud replicas.");
ABSL_FLAG(
    int, cloud_stream_max_age_s, 60,
    "Replace each cloud stream after this many seconds (+-20 % jitter "
    "per stream): a new stream is opened (on the next backend, "
    "including replicas discovered since), the old one drains its "
    "queries and is closed; no query fails. Keep 1.2 x this (plus a query "
    "deadline) below the cloud's --max_connection_age_grace_s: a "
    "stream may open just before its connection's GOAWAY. 0: never.");
ABSL_FLAG(int, cloud_keepalive_time_s, 10,
          "Send an HTTP/2 PING to the cloud every this many seconds (also "
          "when idle); >= 1, or 0 to disable keepalive. With "
          "--cloud_keepalive_timeout_s it bounds how long a cloud that "
          "stops answering without closing the connection (hung, stopped, "
          "a silent network partition) goes unnoticed: time + timeout, then "
          "the streams fail, queries fail fast and the edge reconnects.");
ABSL_FLAG(int, cloud_keepalive_timeout_s, 5,
          "Close the cloud connection when a keepalive PING gets no answer "
          "within this many seconds (>= 1).");
ABSL_FLAG(std::string, cloud_tls_ca, "",
          "PEM CA bundle that signed duet-cloud's certificate: connect to the "
          "cloud over TLS and verify it. Empty (and no other --cloud_tls_*): "
          "plaintext, logged as a WARNING.");
ABSL_FLAG(std::string, cloud_tls_cert, "",
          "PEM client certificate (chain) for mutual TLS with the cloud; "
          "needs --cloud_tls_key.");
ABSL_FLAG(std::string, cloud_tls_key, "",
          "PEM private key of --cloud_tls_cert.");
ABSL_FLAG(std::string, cloud_tls_server_name, "",
          "Name the cloud's certificate must carry instead of --cloud's host "
          "(e.g. 'localhost' when --cloud is an IP address).");
ABSL_FLAG(std::string, listen, "127.0.0.1:50061",
          "HOST:PORT for EdgeService, health and reflection (port 0: any).");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9092",
          "HOST:PORT for Prometheus /metrics; empty disables it.");
ABSL_FLAG(std::string, state_dir, "",
          "Directory of the user's persistent state (scratchpad, trackers, "
          "profile, memo); required. Created if missing.");
ABSL_FLAG(bool, reset_state, false,
          "Discard the stored state (e.g. corrupt, or of another model name) "
          "and start empty. Without it a bad state file stops the daemon; a "
          "state of another version of the same model is migrated (history "
          "kept, rows refetched from the cloud).");
ABSL_FLAG(std::string, user_precision, "int8",
          "User top MLP precision: int8 (post-training quantized: the model "
          "needs its int8 form, see duet-model quantize) or fp32 (also "
          "serves an fp32 model that has none).");
ABSL_FLAG(std::string, int8_arithmetic, "auto",
          "How the int8 user top MLP feeds oneDNN: auto (full 8-bit codes "
          "where oneDNN's int8 kernels are exact, i.e. with VNNI/AMX, else "
          "reduced-weights), full, reduced-weights (7-bit weights) or "
          "reduced-activations (7-bit inputs). Forcing reduced-weights gives "
          "every device the same int8 model whatever its CPU.");
ABSL_FLAG(std::string, wire, "int8",
          "User vector on the wire: int8 (affine, with scale and zero point) "
          "or fp32 (exact; for exactness tests).");
ABSL_FLAG(int, relay_cache_items, 256,
          "Items whose relayed user-table rows are kept for "
          "RecordInteraction (LRU); the cloud is asked to relay min(top_k, "
          "this) items per query. 0 disables relaying.");
ABSL_FLAG(double, uplink_mbps, 0,
          "Emulated uplink bandwidth in Mbit/s (the paper's 5G: 24); each "
          "upstream message waits bytes*8/(mbps*1e6) on one shared virtual "
          "link. 0: unlimited. Also sets the energy model's throughput.");
ABSL_FLAG(double, uplink_rtt_ms, 0,
          "Emulated round-trip time in ms; each upstream message is delayed "
          "by half of it.");
ABSL_FLAG(std::string, device_id, "",
          "This device's id for the cloud's release policy (canary by id or "
          "by hash), sent in every BeginQuery. Empty: an id generated once "
          "and kept in <state_dir>/device_id.");
ABSL_FLAG(bool, model_updates, true,
          "Follow the model version the cloud announces for this device: "
          "download its edge part in the background (GetEdgeModel; sizes, "
          "SHA-256 and signature checked), install it under "
          "<state_dir>/models/<version>-<signature>/, and switch between "
          "queries (the old version answers meanwhile; the history's rows "
          "are refetched at the new version; health stays SERVING). "
          "<state_dir>/models/CURRENT names the version a restart runs "
          "(instead of --model, when it loads and is of the same model). "
          "Failures are retried with backoff (1 s doubling to 60 s) and "
          "shown in GetState.model_update. false: never download, only "
          "report the target (GetState.target_model_version).");
ABSL_FLAG(int, model_check_interval_s, 60,
          "Ask the cloud for this device's target version (GetModelStatus) "
          "at start and every this many seconds, besides the target every "
          "response carries and a query refused FAILED_PRECONDITION (a "
          "retired version), which asks at once. 0: no periodic poll.");
ABSL_FLAG(int, snapshot_every, 1000,
          "Interaction-log records between compactions into a snapshot.");

int main(int argc, char** argv) {
  // A device daemon: cap glibc's per-thread malloc arenas. gRPC's sync server
  // runs requests on a dynamic thread pool, and with the default (8 x cores)
  // each new thread's arena kept RSS creeping up under load (56 MB after 7k
  // queries vs 35 MB flat with 2 arenas; tests/deploy/memory_soak_test.py).
  mallopt(M_ARENA_MAX, 2);
  duet::common::ParseFlagsOrExit(
      argc, argv,
      "Duet on-device daemon: serves EdgeService (Recommend, "
      "RecordInteraction, UpdateProfile, GetState) for the app on the device; "
      "runs the user model locally and streams quantized user vectors to "
      "duet-cloud.\n"
      "Usage: duet-edge --model DIR --cloud TARGET --state_dir DIR [--listen "
      "HOST:PORT] [--metrics_listen HOST:PORT] ...\n"
      "Logs the ports it bound on stderr; SIGTERM/SIGINT drain and stop it.\n"
      "Exit status: 0 after a clean stop, 1 when the daemon cannot start, 2 "
      "on bad usage.",
      {__FILE__, duet::common::kServerFlagsFile});

  // Block the stop signals in every thread; main waits for them below.
  duet::common::BlockDaemonSignals();

  auto shared = duet::common::ReadServerFlags();
  if (!shared.ok()) duet::common::ExitWithUsageError(shared.status().message());
  duet::edge::EdgeServerOptions o;
  o.model_dir = shared->model_dir;
  o.cloud_target = absl::GetFlag(FLAGS_cloud);
  o.cloud_streams = absl::GetFlag(FLAGS_cloud_streams);
  o.cloud_stream_max_age =
      absl::Seconds(absl::GetFlag(FLAGS_cloud_stream_max_age_s));
  o.cloud_keepalive_time =
      absl::Seconds(absl::GetFlag(FLAGS_cloud_keepalive_time_s));
  o.cloud_keepalive_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_cloud_keepalive_timeout_s));
  o.cloud_tls.ca_file = absl::GetFlag(FLAGS_cloud_tls_ca);
  o.cloud_tls.cert_file = absl::GetFlag(FLAGS_cloud_tls_cert);
  o.cloud_tls.key_file = absl::GetFlag(FLAGS_cloud_tls_key);
  o.cloud_tls.server_name = absl::GetFlag(FLAGS_cloud_tls_server_name);
  o.listen = absl::GetFlag(FLAGS_listen);
  o.tls = shared->tls;
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.reset_state = absl::GetFlag(FLAGS_reset_state);
  o.user_precision = absl::GetFlag(FLAGS_user_precision);
  o.int8_arithmetic = absl::GetFlag(FLAGS_int8_arithmetic);
  o.wire = absl::GetFlag(FLAGS_wire);
  o.max_candidates = shared->max_candidates;
  o.default_timeout = shared->default_timeout;
  o.relay_cache_items = absl::GetFlag(FLAGS_relay_cache_items);
  o.uplink_mbps = absl::GetFlag(FLAGS_uplink_mbps);
  o.uplink_rtt = absl::Milliseconds(absl::GetFlag(FLAGS_uplink_rtt_ms));
  o.snapshot_every = absl::GetFlag(FLAGS_snapshot_every);
  o.device_id = absl::GetFlag(FLAGS_device_id);
  o.model_updates = absl::GetFlag(FLAGS_model_updates);
  o.model_check_interval =
      absl::Seconds(absl::GetFlag(FLAGS_model_check_interval_s));

  if (const absl::Status valid = duet::edge::ValidateEdgeServerOptions(o);
      !valid.ok()) {
    duet::common::ExitWithUsageError(valid.message());
  }
  auto server = duet::edge::EdgeServer::Create(o);
  if (!server.ok()) {
    std::fprintf(stderr, "duet-edge: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const std::string sig = duet::common::WaitForStopSignal(nullptr);
  std::fprintf(stderr, "duet-edge: received %s, draining (grace %s)\n",
               sig.c_str(),
               absl::FormatDuration(shared->shutdown_grace).c_str());
  (*server)->Shutdown(shared->shutdown_grace);
  (*server)->Wait();
  return 0;
}
