#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/duet.json, the Duet overview dashboard.

The JSON is generated so that panels stay uniform and every PromQL expression
lives in one readable place; edit this file, run it, and commit both
(tests/deploy/test_dashboard_json.py fails when they disagree).
    deploy/grafana/make_dashboard.py [--check]
Expressions use only metric names that duet-cloud and duet-edge export
(cloud/cloud_metrics.cc, edge/edge_metrics.cc, common/obs/metrics.cc,
common/obs/energy_meter.cc) and the job names of deploy/prometheus/*.yml.
"""
import json
import os
import sys

DATASOURCE = {"type": "prometheus", "uid": "duet-prometheus"}
RATE = "$__rate_interval"
# Split-path RPCs of the cloud (DESIGN.md §3); MonolithicScore is the baseline.
SPLIT_RPCS = 'rpc=~"ScoringSession|Score"'
SCORING_RPCS = 'rpc=~"ScoringSession|Score|MonolithicScore"'


def quantiles(selector, by, legend_prefix=""):
    """p50/p95/p99 targets of duet_query_duration_seconds for `selector`."""
    out = []
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        out.append(target(
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate(duet_query_duration_seconds_bucket{{{selector}}}[{RATE}])))",
            f"{legend_prefix}{name} {{{{{by}}}}}"))
    return out


def target(expr, legend, instant=False, fmt="time_series"):
    t = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
         "range": not instant, "instant": instant, "format": fmt}
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def row(self, title):
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(),
                            "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def add(self, panel, w, h):
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["datasource"] = DATASOURCE
        for i, t in enumerate(panel["targets"]):
            t["refId"] = chr(ord("A") + i)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self):
        if self.x:
            self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def _id(self):
        self.next_id += 1
        return self.next_id - 1


def timeseries(title, description, targets, unit, stack=False, min0=True,
               maxv=None):
    defaults = {
        "unit": unit,
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                   "showPoints": "never", "spanNulls": True,
                   "stacking": {"mode": "normal" if stack else "none",
                                "group": "A"}},
    }
    if min0:
        defaults["min"] = 0
    if maxv is not None:
        defaults["max"] = maxv
    return {"type": "timeseries", "title": title, "description": description,
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title, description, expr, unit, decimals=None):
    defaults = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description,
            "targets": [target(expr, title)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"],
                                          "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area",
                        "textMode": "auto", "justifyMode": "auto",
                        "orientation": "auto"}}


def table(title, description, targets):
    return {"type": "table", "title": title, "description": description,
            "targets": targets,
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True},
            "transformations": [
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {"excludeByName": {
                    "Time": True, "Value": True, "__name__": True}}}]}


def build():
    L = Layout()
    edge_qps = f'sum(rate(duet_queries_total{{side="edge"}}[{RATE}]))'

    L.row("Overview")
    L.add(stat("Edge queries/s", "Recommend calls answered by the edge(s), "
               "all status codes.", edge_qps, "reqps", 1), 4, 4)
    L.add(stat("Cloud queries/s", "Scoring RPCs answered by the cloud "
               "replicas (session, unary and monolithic).",
               f'sum(rate(duet_queries_total{{side="cloud",{SCORING_RPCS}}}[{RATE}]))',
               "reqps", 1), 4, 4)
    L.add(stat("Edge p99 latency", "99th percentile of the edge's end-to-end "
               "Recommend latency (stage total).",
               "histogram_quantile(0.99, sum by (le) (rate("
               f'duet_query_duration_seconds_bucket{{side="edge",stage="total"}}[{RATE}])))',
               "s"), 4, 4)
    L.add(stat("Error ratio", "Share of queries (both sides) whose status "
               "code is not OK.",
               f'(sum(rate(duet_queries_total{{code!="OK"}}[{RATE}])) or vector(0))'
               f" / sum(rate(duet_queries_total[{RATE}]))", "percentunit", 2),
          4, 4)
    L.add(stat("Uplink bytes per query", "Serialized bytes the edge sends "
               "upstream per Recommend (BeginQuery + UserVector).",
               f"sum(rate(duet_uplink_bytes_total[{RATE}])) / {edge_qps}",
               "decbytes", 0), 4, 4)
    L.add(stat("Uptime (youngest process)", "Time since the most recently "
               "started duet process started.",
               'time() - max(process_start_time_seconds{job=~"duet-.*"})',
               "s", 0), 4, 4)

    L.row("Latency")
    L.add(timeseries(
        "Edge latency by stage (p50 / p95 / p99)",
        "duet_query_duration_seconds{side=\"edge\"}: user_model (the on-device "
        "user model), cloud (BeginQuery sent to Scores received), total "
        "(the Recommend call).",
        quantiles('side="edge"', "stage"), "s"), 12, 9)
    L.add(timeseries(
        "Cloud latency by stage, split path (p50 / p95 / p99)",
        "duet_query_duration_seconds{side=\"cloud\"} of ScoringSession and "
        "Score: queue (admission to worker), item_model, user_wait (item side "
        "done until the user vector arrived), combine, total.",
        quantiles(f'side="cloud",{SPLIT_RPCS}', "stage"), "s"), 12, 9)
    L.add(timeseries(
        "Split (edge total) vs monolithic baseline (cloud MonolithicScore)",
        "End-to-end latency of a split query as the edge sees it against the "
        "cloud-side latency of the same ranking done monolithically "
        "(duet-loadgen --target monolithic). The monolithic line has data "
        "only while monolithic load runs.",
        [target("histogram_quantile(%s, sum by (le) (rate("
                'duet_query_duration_seconds_bucket{side="edge",stage="total"}'
                f"[{RATE}])))" % q, f"split {n}")
         for q, n in (("0.5", "p50"), ("0.99", "p99"))] +
        [target("histogram_quantile(%s, sum by (le) (rate("
                'duet_query_duration_seconds_bucket{side="cloud",stage="total",'
                f'rpc="MonolithicScore"}}[{RATE}])))' % q, f"monolithic {n}")
         for q, n in (("0.5", "p50"), ("0.99", "p99"))],
        "s"), 12, 8)
    L.add(timeseries(
        "Cloud p99 by RPC (total)",
        "Per-RPC 99th percentile of the cloud's total stage.",
        [target("histogram_quantile(0.99, sum by (le, rpc) (rate("
                'duet_query_duration_seconds_bucket{side="cloud",stage="total"}'
                f"[{RATE}])))", "{{rpc}}")], "s"), 12, 8)

    L.row("Traffic and errors")
    L.add(timeseries(
        "Queries per second",
        "duet_queries_total by side and RPC (the edge has one RPC, Recommend).",
        [target(f"sum by (side, rpc) (rate(duet_queries_total[{RATE}]))",
                "{{side}} {{rpc}}")], "reqps"), 6, 8)
    L.add(timeseries(
        "Errors by status code",
        "Queries that did not end OK, by side and gRPC status code; a flat "
        "zero line when there are none.",
        [target(f'sum by (side, code) (rate(duet_queries_total{{code!="OK"}}[{RATE}]))'
                " or on() vector(0)", "{{side}} {{code}}")], "reqps"), 6, 8)
    L.add(timeseries(
        "Rejected at admission, by reason",
        "duet_rejected_queries_total: inflight (bounded admission is full, "
        "RESOURCE_EXHAUSTED) or shutdown; zero when none.",
        [target(f"sum by (side, reason) (rate(duet_rejected_queries_total[{RATE}]))"
                " or on() vector(0)", "{{side}} {{reason}}")], "reqps"), 6, 8)
    L.add(timeseries(
        "In-flight queries",
        "duet_inflight_queries per process (edge: Recommend calls in progress; "
        "cloud: admitted and not finished).",
        [target("sum by (side, instance) (duet_inflight_queries)",
                "{{side}} {{instance}}")], "short"), 6, 8)

    L.row("Payload")
    L.add(timeseries(
        "Payload bytes per query (edge ⇄ cloud)",
        "duet_uplink_bytes_total and duet_downlink_bytes_total (serialized "
        "protobuf bytes counted by the edge) divided by the edge's query "
        "rate. Uplink is the candidate ids plus the int8 user vector; "
        "downlink is the scores plus the embedding relay.",
        [target(f"sum(rate(duet_uplink_bytes_total[{RATE}])) / {edge_qps}",
                "uplink"),
         target(f"sum(rate(duet_downlink_bytes_total[{RATE}])) / {edge_qps}",
                "downlink")], "decbytes"), 12, 8)
    L.add(timeseries(
        "Candidates scored per query",
        "duet_candidates_scored_total ÷ successful scoring queries of the cloud.",
        [target(f"sum(rate(duet_candidates_scored_total[{RATE}])) / "
                f'sum(rate(duet_queries_total{{side="cloud",{SCORING_RPCS},'
                f'code="OK"}}[{RATE}]))', "candidates")], "short"), 12, 8)

    L.row("Energy")
    L.add(timeseries(
        "Energy per query: edge / cloud / network (counter ÷ queries)",
        "rate(duet_energy_joules_total) of each side divided by that side's "
        "query rate; network energy (5G uplink model) is divided by the "
        "edge's query rate. Includes idle and background work of the "
        "process, so it is the all-in cost at the current load. "
        "See docs/ENERGY.md for sources and constants.",
        [target(f'sum by (side) (rate(duet_energy_joules_total{{side=~"edge|cloud"}}[{RATE}]))'
                f' / on (side) sum by (side) ('
                f'rate(duet_queries_total{{side="edge"}}[{RATE}]) or '
                f'rate(duet_queries_total{{side="cloud",{SCORING_RPCS}}}[{RATE}]))',
                "{{side}}"),
         target(f'sum(rate(duet_energy_joules_total{{side="network"}}[{RATE}]))'
                f" / {edge_qps}", "network")],
        "joule", stack=True), 8, 9)
    L.add(timeseries(
        "Energy per query: per-query attribution (histogram mean)",
        "Mean of duet_query_energy_joules by side: the CPU time each query "
        "used × the device profile's watts per busy core (edge: phone, "
        "cloud: server), and the uplink bytes × joules per byte (network).",
        [target(f"sum by (side) (rate(duet_query_energy_joules_sum[{RATE}]))"
                f" / sum by (side) (rate(duet_query_energy_joules_count[{RATE}]))",
                "{{side}}")], "joule", stack=True), 8, 9)
    L.add(timeseries(
        "Power by side and source",
        "rate(duet_energy_joules_total) in watts; source=rapl is measured "
        "package energy of the machine, source=model is the CPU-time or 5G "
        "model.",
        [target(f"sum by (side, source) (rate(duet_energy_joules_total[{RATE}]))",
                "{{side}} ({{source}})")], "watt"), 8, 9)

    L.row("Cloud execution")
    L.add(timeseries(
        "Strategy mix",
        "duet_strategy_total: per-query choices of the strategy selector: "
        "lookup parallelism (batch / table) and user contribution (load / "
        "recompute).",
        [target(f"sum by (kind, choice) (rate(duet_strategy_total[{RATE}]))",
                "{{kind}}: {{choice}}")], "reqps", stack=True), 8, 8)
    L.add(timeseries(
        "Item cache hit ratio",
        "Hits ÷ lookups of the item-tower output cache "
        "(duet_item_cache_lookups_total{result}); the break-even ratio above "
        "which the cache saves time for the serving model "
        "(duet_item_cache_break_even_hit_ratio); the share of queries the "
        "auto policy sent past the cache (duet_item_cache_queries_total).",
        [target(f'(sum(rate(duet_item_cache_lookups_total{{result="hit"}}[{RATE}]))'
                " or vector(0)) / "
                f"sum(rate(duet_item_cache_lookups_total[{RATE}]))", "hit ratio"),
         target("max(duet_item_cache_break_even_hit_ratio)", "break-even"),
         target(f'(sum(rate(duet_item_cache_queries_total{{decision="bypassed"}}[{RATE}]))'
                " or vector(0)) / "
                f"sum(rate(duet_item_cache_queries_total[{RATE}]))",
                "queries bypassed")],
        "percentunit", maxv=1), 8, 8)
    L.add(timeseries(
        "Item cache entries and table placement",
        "duet_item_cache_entries per replica, and how many item tables the "
        "placement planner replicated or sharded (duet_placement_tables).",
        [target("sum by (instance) (duet_item_cache_entries)",
                "cache entries {{instance}}"),
         target("max by (mode) (duet_placement_tables)", "tables: {{mode}}")],
        "short"), 8, 8)

    L.row("Edge state")
    L.add(timeseries(
        "Scratchpad, relay and profile memo",
        "Per second: interactions pushed into the scratchpad, interactions "
        "served from the relay cache or fetched with GetItemEmbeddings, and "
        "background recomputes of the memoized static bottom MLP.",
        [target(f"sum(rate(duet_scratchpad_updates_total[{RATE}]))",
                "scratchpad updates"),
         target(f"sum(rate(duet_relay_hits_total[{RATE}]))", "relay hits"),
         target(f"sum(rate(duet_embedding_fetches_total[{RATE}]))",
                "embedding fetches"),
         target(f"sum(rate(duet_memo_recomputes_total[{RATE}]))",
                "memo recomputes")], "ops"), 12, 8)
    L.add(timeseries(
        "Profile memo recompute time (p50 / p99)",
        "duet_memo_recompute_duration_seconds: the static bottom MLP is "
        "recomputed in the background after UpdateProfile; queries never "
        "wait for it. NaN (no line) until a profile update happens.",
        [target(f"histogram_quantile({q}, sum by (le) (rate("
                f"duet_memo_recompute_duration_seconds_bucket[{RATE}])))", n)
         for q, n in (("0.5", "p50"), ("0.99", "p99"))], "s"), 12, 8)

    L.row("Model releases")
    L.add(timeseries(
        "Queries per model version (cloud)",
        "duet_model_version_queries_total: queries routed to each served "
        "version (the version their user vector is of). During a release the "
        "canary's share moves to the new version, then everyone's; a version "
        "outside the policy is retired once its rate has been zero for "
        "--version_grace_s.",
        [target(f"sum by (version) (rate(duet_model_version_queries_total"
                f"[{RATE}]))", "v{{version}}")], "reqps"), 8, 8)
    L.add(timeseries(
        "Versions served (cloud)",
        "duet_model_versions: 1 per served version and state (AVAILABLE, or "
        "RETIRING: outside the version policy, served until idle).",
        [target("sum by (version, state) (duet_model_versions)",
                "v{{version}} {{state}}")], "short"), 8, 8)
    L.add(timeseries(
        "Edge model updates",
        "duet_edge_model_updates_total by result (switched; "
        "switched_rebuilding: the history rows are fetched after the swap; "
        "failed: retried with backoff; a zero line when no update happened) "
        "and the edges' download rate.",
        [target(f"sum by (result) (rate(duet_edge_model_updates_total"
                f"[{RATE}])) or on() vector(0)", "{{result}}"),
         target(f"sum(rate(duet_edge_model_download_bytes_total[{RATE}]))",
                "download bytes/s")], "short"), 8, 8)

    L.row("Processes")
    L.add(timeseries(
        "CPU cores used",
        "rate(process_cpu_seconds_total) per process.",
        [target(f"sum by (job, instance) (rate(process_cpu_seconds_total"
                f'{{job=~"duet-.*"}}[{RATE}]))', "{{job}} {{instance}}")],
        "short"), 8, 8)
    L.add(timeseries(
        "Resident memory",
        "process_resident_memory_bytes per process (model tables are "
        "memory-mapped: pages touched count here).",
        [target('sum by (job, instance) (process_resident_memory_bytes{job=~"duet-.*"})',
                "{{job}} {{instance}}")], "bytes"), 8, 8)
    L.add(table(
        "Model and build",
        "duet_model_info{name,version,signature} and "
        "duet_build_info{side,version} of every scraped process.",
        [target("duet_model_info", "", instant=True, fmt="table"),
         target("duet_build_info", "", instant=True, fmt="table")]), 8, 8)

    return {
        "uid": "duet-overview",
        "title": "Duet overview",
        "description": "Duet edge-cloud split inference: latency per stage, "
                       "traffic, payload, energy per query, cloud execution "
                       "strategies and edge state (deploy/grafana/).",
        "tags": ["duet"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 38,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "timepicker": {"refresh_intervals": ["2s", "5s", "10s", "30s", "1m"]},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": []},
        "panels": L.panels,
    }


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "dashboards", "duet.json")
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if sys.argv[1:] == ["--check"]:
        with open(path, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{path} is stale: run {sys.argv[0]}", file=sys.stderr)
                return 1
        return 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
