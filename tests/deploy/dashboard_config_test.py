#!/usr/bin/env python3
"""Static checks of deploy/: the Grafana dashboard is valid dashboard JSON
(schemaVersion, stable uid, unique panel ids, grid positions inside 24
columns and not overlapping, every target with expr + refId and the
provisioned data source uid), it is what deploy/grafana/make_dashboard.py
generates, the provisioning files agree with it and with docker-compose.yml,
and -- with promtool -- every PromQL expression parses and both Prometheus
configs are valid. No processes are started.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def main():
    d = json.loads(read("deploy", "grafana", "dashboards", "duet.json"))
    check(d.get("uid") == "duet-overview", f"uid is {d.get('uid')}")
    check(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36,
          "schemaVersion missing or old")
    check(d.get("title"), "no title")
    ds_yaml = read("deploy", "grafana", "provisioning", "datasources",
                   "prometheus.yml")
    m = re.search(r"^\s*uid:\s*(\S+)", ds_yaml, re.M)
    check(m, "datasource provisioning has no uid")
    ds_uid = m.group(1)

    ids, cells, exprs = set(), {}, []
    for p in d["panels"]:
        check(isinstance(p.get("id"), int) and p["id"] not in ids,
              f"panel id {p.get('id')} missing or duplicated")
        ids.add(p["id"])
        g = p.get("gridPos", {})
        check(all(isinstance(g.get(k), int) for k in "hwxy"),
              f"panel {p['id']} gridPos {g}")
        check(g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24,
              f"panel {p['id']} outside 24 columns: {g}")
        for y in range(g["y"], g["y"] + g["h"]):
            for x in range(g["x"], g["x"] + g["w"]):
                check((x, y) not in cells,
                      f"panels {cells.get((x, y))} and {p['id']} overlap")
                cells[(x, y)] = p["id"]
        if p["type"] == "row":
            continue
        check(p["type"] in ("timeseries", "stat", "table", "gauge",
                            "bargauge"), f"panel type {p['type']}")
        check(p.get("datasource", {}).get("uid") == ds_uid,
              f"panel {p['title']}: datasource is not uid {ds_uid}")
        refs = set()
        check(p.get("targets"), f"panel {p['title']} has no targets")
        for t in p["targets"]:
            check(t.get("expr") and t.get("refId") and t["refId"] not in refs,
                  f"panel {p['title']}: target without expr/unique refId: {t}")
            refs.add(t["refId"])
            check(t.get("datasource", {}).get("uid") == ds_uid,
                  f"panel {p['title']} [{t['refId']}]: datasource uid")
            exprs.append((p["title"], t["refId"], t["expr"]))
    log(f"dashboard {d['uid']}: {len(ids)} panels, {len(exprs)} expressions")

    r = subprocess.run([sys.executable, os.path.join(DEPLOY, "grafana",
                                                     "make_dashboard.py"),
                        "--check"], capture_output=True, text=True)
    check(r.returncode == 0, f"dashboard JSON is stale: {r.stderr}")

    # Provisioning path == compose mount; compose mounts the files that exist.
    prov = read("deploy", "grafana", "provisioning", "dashboards", "duet.yml")
    path = re.search(r"path:\s*(\S+)", prov).group(1)
    compose = read("docker-compose.yml")
    check(f"./deploy/grafana/dashboards:{path}" in compose,
          f"docker-compose.yml does not mount the dashboards at {path}")
    for src in re.findall(r"- \./(deploy/[^:]+):", compose):
        check(os.path.exists(os.path.join(ROOT, src)),
              f"docker-compose.yml mounts missing {src}")

    if shutil.which("promtool") is None:
        log("promtool not installed: PromQL and Prometheus config checks "
            "not run")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboard_rules.yml")
        with open(rules, "w") as f:
            f.write("groups:\n- name: dashboard\n  rules:\n")
            for i, (_, _, e) in enumerate(exprs):
                e = e.replace("$__rate_interval", "30s")
                f.write(f"  - record: duet:dashboard_expr_{i}\n"
                        f"    expr: {json.dumps(e)}\n")
        r = subprocess.run(["promtool", "check", "rules", rules],
                           capture_output=True, text=True)
        check(r.returncode == 0,
              f"a dashboard expression does not parse:\n{r.stdout}{r.stderr}")
        log(f"promtool: all {len(exprs)} expressions parse")
        local = read("deploy", "prometheus", "prometheus.local.yml.in")
        local = (local.replace("@SCRAPE_INTERVAL@", "1s")
                 .replace("@CLOUD_TARGETS@", "'127.0.0.1:9464', '127.0.0.1:9466'")
                 .replace("@EDGE_TARGETS@", "'127.0.0.1:9465'"))
        local_path = os.path.join(tmp, "prometheus.local.yml")
        with open(local_path, "w") as f:
            f.write(local)
        for cfg in (os.path.join(DEPLOY, "prometheus", "prometheus.yml"),
                    local_path):
            r = subprocess.run(["promtool", "check", "config", cfg],
                               capture_output=True, text=True)
            check(r.returncode == 0,
                  f"promtool check config {cfg}:\n{r.stdout}{r.stderr}")
        log("promtool: both Prometheus configs are valid")


if __name__ == "__main__":
    stack.run(main)
