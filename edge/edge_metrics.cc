#include "edge/edge_metrics.h"

#include <utility>

#include "common/obs/metrics.h"

namespace duet::edge {

EdgeMetrics::EdgeMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  prometheus::Registry& r = *registry_;
  auto& durations = prometheus::BuildHistogram()
                        .Name("duet_query_duration_seconds")
                        .Help("Query latency per side and stage, in seconds")
                        .Register(r);
  const auto buckets = common::LatencyBucketsSeconds();
  user_model_ =
      &durations.Add({{"side", "edge"}, {"stage", "user_model"}}, buckets);
  cloud_ = &durations.Add({{"side", "edge"}, {"stage", "cloud"}}, buckets);
  total_ = &durations.Add({{"side", "edge"}, {"stage", "total"}}, buckets);
  queries_ = &prometheus::BuildCounter()
                  .Name("duet_queries_total")
                  .Help("Queries answered, by side and status code")
                  .Register(r);
  auto counter = [&r](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add(
        {});
  };
  uplink_bytes_ = counter("duet_uplink_bytes_total",
                          "Serialized bytes sent upstream (BeginQuery + "
                          "UserVector per query)");
  downlink_bytes_ = counter("duet_downlink_bytes_total",
                            "Serialized bytes received from the cloud");
  scratchpad_updates_ = counter("duet_scratchpad_updates_total",
                                "Interactions pushed into the scratchpad");
  memo_recomputes_ =
      counter("duet_memo_recomputes_total",
              "Background recomputes of the memoized static bottom MLP");
  relay_hits_ = counter("duet_relay_hits_total",
                        "Interactions whose rows came from the relay cache");
  embedding_fetches_ =
      counter("duet_embedding_fetches_total",
              "Interactions that fetched rows with GetItemEmbeddings");
  streams_opened_ = counter(
      "duet_cloud_streams_opened_total",
      "ScoringSession streams opened to the cloud (first opens, reconnects "
      "and age rotations)");
  model_updates_ = &prometheus::BuildCounter()
                        .Name("duet_edge_model_updates_total")
                        .Help(
                            "Model update attempts by result (switched, "
                            "switched_rebuilding, failed)")
                        .Register(r);
  download_bytes_ = counter("duet_edge_model_download_bytes_total",
                            "Bytes of edge models received (GetEdgeModel)");
  update_seconds_ =
      &prometheus::BuildHistogram()
           .Name("duet_edge_model_update_seconds")
           .Help("Model update duration, download start to switched")
           .Register(r)
           .Add({}, prometheus::Histogram::BucketBoundaries{
                        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300});
  memo_seconds_ = &prometheus::BuildHistogram()
                       .Name("duet_memo_recompute_duration_seconds")
                       .Help("Duration of a static bottom MLP recompute")
                       .Register(r)
                       .Add({}, buckets);
  inflight_ = &prometheus::BuildGauge()
                   .Name("duet_inflight_queries")
                   .Help("Recommend calls in progress")
                   .Register(r)
                   .Add({{"side", "edge"}});
  streams_ready_ =
      &prometheus::BuildGauge()
           .Name("duet_cloud_streams_ready")
           .Help("ScoringSession streams to the cloud taking new queries")
           .Register(r)
           .Add({});
}

void EdgeMetrics::SetInt8Arithmetic(const std::string& arithmetic,
                                    const std::string& isa,
                                    const std::string& implementation) {
  prometheus::BuildGauge()
      .Name("duet_int8_arithmetic_info")
      .Help(
          "How the int8 user top MLP feeds oneDNN on this device (full, "
          "reduced-weights, reduced-activations), with oneDNN's ISA and "
          "int8 matmul implementation")
      .Register(*registry_)
      .Add({{"arithmetic", arithmetic},
            {"isa", isa},
            {"implementation", implementation}})
      .Set(1);
}

void EdgeMetrics::CountQuery(absl::StatusCode code) {
  queries_->Add({{"side", "edge"}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
}

void EdgeMetrics::CountModelUpdate(const std::string& result) {
  model_updates_->Add({{"result", result}}).Increment();
}

double EdgeMetrics::model_updates_total(const std::string& result) const {
  for (const prometheus::MetricFamily& family : model_updates_->Collect()) {
    for (const prometheus::ClientMetric& m : family.metric) {
      for (const prometheus::ClientMetric::Label& l : m.label) {
        if (l.name == "result" && l.value == result) return m.counter.value;
      }
    }
  }
  return 0;
}

void EdgeMetrics::MemoRecomputed(absl::Duration took) {
  memo_recomputes_->Increment();
  memo_seconds_->Observe(absl::ToDoubleSeconds(took));
}

}  // namespace duet::edge
