#!/usr/bin/env python3
"""Kubernetes manifests (deploy/k8s): every kustomization renders with the
kubectl on PATH (`kubectl kustomize`, offline; Debian 12's kubectl 1.20 embeds
kustomize v2.0.3, newer ones v5) and each rendered object agrees with the
binaries it runs:
- images: the Dockerfile's duet:latest, retagged by a kustomize `images:`
  entry;
- every --flag of duet-cloud, duet-edge, duet-model and duet-health-probe in
  a command, argument list or probe appears in that binary's --help (usage
  on stdout, exit 0; --helpfull for flags defined outside its main file);
  $(VAR) references resolve (env, ConfigMaps, resourceFieldRef);
- container ports are the --listen / --metrics_listen ports, the
  prometheus.io/port annotation the metrics port, probes run
  duet-health-probe against the container's own gRPC port;
- terminationGracePeriodSeconds >= preStop sleep + the server's drain
  (--shutdown_grace_s of duet-cloud and duet-edge);
- the edge's dns:/// target is a headless Service selecting the cloud pods on
  the cloud's gRPC port; the edge's state is on a volumeClaimTemplate; cloud
  and edge generate the same model;
- the HorizontalPodAutoscaler (autoscaling/v2) scales the cloud Deployment on
  Pods/External metrics only, each named by a prometheus-adapter rule on a
  metric the servers' binaries name; the PodDisruptionBudget selects the
  cloud pods;
- requests and limits of CPU and memory on every container, requests <=
  limits, --workers and --memory_budget_mb within them;
- with promtool: the shipped Prometheus configuration and the adapter's
  queries are valid.
No cluster is needed or contacted. The YAML from kustomize becomes JSON through
`kubectl label --local -o json` (removing a label no object has), which
works offline in every kubectl version; Python's standard library has no YAML
reader. Exit 77 (skipped) when kubectl is not installed.
    k8s_manifests_test.py --cloud BIN --edge BIN --model BIN --probe BIN
"""
import json
import math
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
K8S = os.path.join(ROOT, "deploy", "k8s")
BASE = os.path.join(K8S, "base")
BASE_REL = os.path.relpath(BASE, ROOT)
IMAGE = "duet:latest"  # deploy/docker/Dockerfile: docker build -t duet:latest
USER_ID = 10001  # the image's user `duet`
BINARIES = ("duet-cloud", "duet-edge", "duet-model", "duet-health-probe")
SERVERS = ("duet-cloud", "duet-edge")
KUBECTL = "kubectl"


# ---------------------------------------------------------------- rendering

def kustomizations():
    found = []
    for d, _, files in os.walk(K8S):
        if "kustomization.yaml" in files or "kustomization.yml" in files:
            found.append(d)
    return sorted(found)


def render(path):
    """kubectl kustomize PATH -> list of objects (dicts)."""
    r = subprocess.run([KUBECTL, "kustomize", path], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 0, f"kubectl kustomize "
          f"{os.path.relpath(path, ROOT)} failed:\n{r.stderr}")
    docs = [d for d in re.split(r"^---\s*$", r.stdout, flags=re.M)
            if d.strip()]
    return to_json(r.stdout, len(docs), path)


def to_json(yaml_text, expected, what):
    # `label --local` prints each object as JSON and never contacts a server;
    # removing a label nobody sets ("name-") leaves the objects unchanged
    # (apart from an empty labels map).
    r = subprocess.run([KUBECTL, "label", "--local", "-f", "-", "-o", "json",
                        "duet-k8s-manifests-test-"],
                       input=yaml_text, capture_output=True, text=True,
                       timeout=60)
    check(r.returncode == 0, f"kubectl label --local (YAML -> JSON) failed "
          f"for {what}:\n{r.stderr}")
    objs, dec, i, s = [], json.JSONDecoder(), 0, r.stdout
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i >= len(s):
            break
        obj, i = dec.raw_decode(s, i)
        objs.extend(obj["items"] if obj.get("kind") == "List" else [obj])
    check(len(objs) == expected,
          f"{what}: {expected} YAML documents but {len(objs)} JSON objects")
    return objs


# ------------------------------------------------------------ the binaries

class Binaries:
    def __init__(self, paths):
        self.paths = paths
        self.help = {}
        self.helpfull = {}

    def help_text(self, binary):
        if binary not in self.help:
            r = subprocess.run([self.paths[binary], "--help"],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode == 0,
                  f"{binary} --help exited {r.returncode}")
            self.help[binary] = r.stdout
            check("--" in self.help[binary],
                  f"{binary} --help printed no usage")
        return self.help[binary]

    def has_flag(self, binary, flag):
        pattern = re.compile(r"(?<![\w-])--" + re.escape(flag) + r"(?![\w-])")
        if pattern.search(self.help_text(binary)):
            return True
        # --help lists the flags of the binary's main file; --helpfull all
        # (duet-model is not Abseil: skip it).
        if binary == "duet-model":
            return False
        if binary not in self.helpfull:
            r = subprocess.run([self.paths[binary], "--helpfull"],
                               capture_output=True, text=True, timeout=30)
            self.helpfull[binary] = r.stdout if r.returncode == 0 else ""
        return bool(pattern.search(self.helpfull[binary]))

    def default(self, binary, flag):
        """The flag's default as --help(full) states it (`default: 10`)."""
        self.has_flag(binary, flag)
        text = self.help_text(binary) + self.helpfull.get(binary, "")
        m = re.search(r"--" + re.escape(flag) + r"\b.*?default:\s*([^;\s]+)",
                      text, re.S)
        check(m, f"{binary} --help states no default for --{flag}; set it")
        return m.group(1).strip('"')


def parse_flags(tokens, what):
    """['gen', '--a', '1', '--b=2'] -> {'a': '1', 'b': '2'}; order kept."""
    flags = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.startswith("--"):
            name, eq, value = t[2:].partition("=")
            if not eq:
                nxt = tokens[i + 1] if i + 1 < len(tokens) else None
                if nxt is not None and not nxt.startswith("--"):
                    value = nxt
                    i += 1
                else:
                    value = "true"
            check(name not in flags, f"{what}: --{name} given twice")
            flags[name] = value
        i += 1
    return flags


def check_flags(bins, binary, tokens, what):
    flags = parse_flags(tokens, what)
    for name in flags:
        check(bins.has_flag(binary, name),
              f"{what}: {binary} has no flag --{name} (not in its --help)")
    return flags


# -------------------------------------------------------------- quantities

def cpu_cores(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


MEM_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def mem_bytes(q):
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    check(m and (m.group(2) in MEM_UNITS or m.group(2) == ""),
          f"memory quantity {q!r} not understood")
    return float(m.group(1)) * MEM_UNITS.get(m.group(2), 1)


# ----------------------------------------------------------------- objects

class Rendered:
    """One kustomization's objects."""

    def __init__(self, path, objs):
        self.path = os.path.relpath(path, ROOT)
        self.objs = objs

    def of(self, kind):
        return [o for o in self.objs if o["kind"] == kind]

    def get(self, kind, name, namespace=None):
        for o in self.of(kind):
            if (o["metadata"]["name"] == name and
                    o["metadata"].get("namespace") == namespace):
                return o
        return None

    def workloads(self):
        return [o for o in self.objs
                if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def binary_of(container):
    cmd = container.get("command") or []
    return os.path.basename(cmd[0]) if cmd else None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v
                                  for k, v in selector.items())


def expand(container, rendered, namespace, what):
    """The container's command + args with $(VAR) resolved as the kubelet
    does, from env (value, configMapKeyRef, resourceFieldRef) and envFrom."""
    env = {}
    for ef in container.get("envFrom", []):
        ref = ef.get("configMapRef")
        check(ref, f"{what}: envFrom other than configMapRef")
        cm = rendered.get("ConfigMap", ref["name"], namespace)
        check(cm, f"{what}: envFrom names ConfigMap {ref['name']}, which the "
              f"kustomization does not produce")
        env.update({ef.get("prefix", "") + k: v
                    for k, v in cm.get("data", {}).items()})
    for e in container.get("env", []):
        vf = e.get("valueFrom")
        if vf is None:
            env[e["name"]] = e.get("value", "")
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            cm = rendered.get("ConfigMap", ref["name"], namespace)
            check(cm and ref["key"] in cm.get("data", {}),
                  f"{what}: env {e['name']}: no ConfigMap key {ref}")
            env[e["name"]] = cm["data"][ref["key"]]
        elif "resourceFieldRef" in vf:
            env[e["name"]] = resource_field(container, vf["resourceFieldRef"],
                                            what)
        else:
            check(False, f"{what}: env {e['name']}: unsupported {vf}")

    def sub(m):
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        check(m.group(1) in env,
              f"{what}: $({m.group(1)}) is not defined for the container")
        return env[m.group(1)]

    pattern = re.compile(r"\$\$\(\w+\)|\$\((\w+)\)")
    return [pattern.sub(sub, t) for t in
            (container.get("command", []) + container.get("args", []))]


def resource_field(container, ref, what):
    check(ref.get("containerName", container["name"]) == container["name"],
          f"{what}: resourceFieldRef of another container")
    kind, _, res = ref["resource"].partition(".")
    value = container.get("resources", {}).get(kind, {}).get(res)
    check(value is not None, f"{what}: resourceFieldRef {ref['resource']} "
          f"is not set (the kubelet would use the node's capacity)")
    divisor = ref.get("divisor", "1")
    if res == "cpu":
        return str(math.ceil(cpu_cores(value) / cpu_cores(divisor) - 1e-9))
    return str(math.ceil(mem_bytes(value) / mem_bytes(divisor) - 1e-9))


def mount_of(container, path):
    """(volume name, path inside the volume) of an absolute path."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[2]):
                best = (m["name"], path[len(mp):].lstrip("/"), mp)
    return (best[0], best[1]) if best else (None, None)


def host_port(addr, what):
    m = re.fullmatch(r"(.+):(\d+)", addr)
    check(m, f"{what}: {addr!r} is not HOST:PORT")
    return m.group(1), int(m.group(2))


def prestop_seconds(container):
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = " ".join(str(t) for t in pre.get("exec", {}).get("command", []))
    m = re.search(r"\bsleep\s+(\d+)", cmd)
    return int(m.group(1)) if m else 0


# ------------------------------------------------------------ the checks

class Container:
    """A container of a rendered workload with its resolved flags."""

    def __init__(self, rendered, workload, c, bins, init):
        ns = workload["metadata"].get("namespace")
        self.workload = workload
        self.c = c
        self.init = init
        self.what = (f"{rendered.path}: {workload['kind']}/"
                     f"{workload['metadata']['name']} "
                     f"{'initContainer' if init else 'container'} {c['name']}")
        self.binary = binary_of(c)
        check(self.binary in BINARIES,
              f"{self.what}: command {c.get('command')} is not one of "
              f"{BINARIES}")
        self.argv = expand(c, rendered, ns, self.what)
        self.flags = check_flags(bins, self.binary, self.argv[1:], self.what)


def check_resources(ct):
    res = ct.c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            check(r in res.get(kind, {}),
                  f"{ct.what}: resources.{kind}.{r} is not set")
    check(cpu_cores(res["requests"]["cpu"]) <= cpu_cores(res["limits"]["cpu"]),
          f"{ct.what}: CPU request above its limit")
    check(mem_bytes(res["requests"]["memory"]) <=
          mem_bytes(res["limits"]["memory"]),
          f"{ct.what}: memory request above its limit")


def check_security(ct):
    spec = pod_spec(ct.workload)
    psc, csc = spec.get("securityContext", {}), ct.c.get("securityContext", {})
    user = csc.get("runAsUser", psc.get("runAsUser"))
    check(user in (None, USER_ID), f"{ct.what}: runAsUser {user}, the image's "
          f"user is {USER_ID}")
    check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True,
          f"{ct.what}: runAsNonRoot is not set")


def check_server(ct, bins):
    """duet-cloud / duet-edge: ports, annotations, probes, grace period."""
    spec = pod_spec(ct.workload)
    meta = ct.workload["spec"]["template"]["metadata"]
    ports = {p.get("name"): p["containerPort"] for p in ct.c.get("ports", [])}
    for flag, port_name in (("listen", "grpc"), ("metrics_listen", "metrics")):
        check(flag in ct.flags, f"{ct.what}: --{flag} is not set")
        host, port = host_port(ct.flags[flag], f"{ct.what} --{flag}")
        check(host in ("0.0.0.0", "[::]"),
              f"{ct.what}: --{flag} {ct.flags[flag]} is not reachable from "
              f"other pods (listen on 0.0.0.0)")
        check(ports.get(port_name) == port,
              f"{ct.what}: containerPort {port_name} is {ports.get(port_name)}"
              f", --{flag} listens on {port}")
    _, grpc_port = host_port(ct.flags["listen"], ct.what)
    _, metrics_port = host_port(ct.flags["metrics_listen"], ct.what)
    ann = meta.get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true",
          f"{ct.what}: pod annotation prometheus.io/scrape is not \"true\"")
    check(ann.get("prometheus.io/port") == str(metrics_port),
          f"{ct.what}: prometheus.io/port {ann.get('prometheus.io/port')} is "
          f"not the metrics port {metrics_port}")
    check(pod_labels(ct.workload).get("app.kubernetes.io/part-of") == "duet",
          f"{ct.what}: pod label app.kubernetes.io/part-of=duet (what "
          f"deploy/k8s/monitoring/prometheus.yml keeps) is missing")

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = ct.c.get(kind)
        if probe is None and kind == "startupProbe":
            continue
        check(probe is not None, f"{ct.what}: no {kind}")
        cmd = probe.get("exec", {}).get("command")
        check(cmd and os.path.basename(cmd[0]) == "duet-health-probe",
              f"{ct.what}: {kind} is not an exec of duet-health-probe")
        pw = f"{ct.what} {kind}"
        flags = check_flags(bins, "duet-health-probe", cmd[1:], pw)
        host, port = host_port(flags.get("addr", ""), pw)
        check(host in ("127.0.0.1", "localhost") and port == grpc_port,
              f"{pw}: --addr {flags.get('addr')} is not "
              f"127.0.0.1:{grpc_port}, the container's gRPC port")
        timeout_ms = int(flags.get("timeout_ms") or
                         bins.default("duet-health-probe", "timeout_ms"))
        check(timeout_ms < 1000 * probe.get("timeoutSeconds", 1),
              f"{pw}: --timeout_ms {timeout_ms} does not fit in "
              f"timeoutSeconds {probe.get('timeoutSeconds', 1)}")

    if "shutdown_grace_s" in ct.flags:
        drain = int(ct.flags["shutdown_grace_s"])
    else:
        drain = int(bins.default(ct.binary, "shutdown_grace_s"))
    sleep = prestop_seconds(ct.c)
    check(sleep > 0, f"{ct.what}: no preStop sleep")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace >= sleep + drain,
          f"{ct.what}: terminationGracePeriodSeconds {grace} < preStop sleep "
          f"{sleep} s + drain {drain} s")
    log(f"  {ct.what}: ports {grpc_port}/{metrics_port}, probes on "
        f"{grpc_port}, grace {grace} s >= {sleep} + {drain}")


def model_gen(server, containers):
    """The flags of the init container that runs duet-model gen into the
    server's --model directory."""
    model_dir = server.flags.get("model", "")
    what = server.what
    vol, sub = mount_of(server.c, model_dir)
    check(vol, f"{what}: --model {model_dir} is on no volume")
    for ct in containers:
        if ct.init and ct.binary == "duet-model" and ct.argv[1:2] == ["gen"]:
            gvol, gsub = mount_of(ct.c, ct.flags.get("out", ""))
            if (gvol, gsub) == (vol, sub):
                return ct.flags
    check(False, f"{what}: no init container runs duet-model gen --out into "
          f"--model {model_dir} (volume {vol})")


def check_kustomization(r, bins, adapter_metrics):
    log(f"{r.path}: {len(r.objs)} objects "
        f"({', '.join(sorted(set(o['kind'] for o in r.objs)))})")
    cloud = edge = None
    for w in r.workloads():
        containers = []
        spec = pod_spec(w)
        for init in (True, False):
            for c in spec.get("initContainers" if init else "containers", []):
                ct = Container(r, w, c, bins, init)
                check(c.get("image") == IMAGE if r.path == BASE_REL
                      else re.search(r"(^|/)duet(:|@|$)", c.get("image", "")),
                      f"{ct.what}: image {c.get('image')} (the Dockerfile "
                      f"builds {IMAGE})")
                check_resources(ct)
                check_security(ct)
                containers.append(ct)
        servers = [ct for ct in containers
                   if not ct.init and ct.binary in SERVERS]
        check(len(servers) == 1,
              f"{r.path}: {w['kind']}/{w['metadata']['name']} runs "
              f"{len(servers)} duet servers")
        server = servers[0]
        check_server(server, bins)
        gen = model_gen(server, containers)
        if server.binary == "duet-cloud":
            check(cloud is None, f"{r.path}: two duet-cloud workloads")
            check(w["kind"] == "Deployment",
                  f"{server.what}: duet-cloud is a {w['kind']}, expected a "
                  f"Deployment")
            cloud = (w, server, gen)
        else:
            check(edge is None, f"{r.path}: two duet-edge workloads")
            edge = (w, server, gen)
    if cloud is None and edge is None:
        return
    check(cloud and edge, f"{r.path}: renders only one of duet-cloud and "
          f"duet-edge")
    check_cloud(r, *cloud, adapter_metrics)
    check_edge(r, *edge, cloud)


def check_cloud(r, w, ct, gen, adapter_metrics):
    res = ct.c["resources"]
    f = ct.flags
    check(int(f.get("max_connection_age_s", 0)) > 0,
          f"{ct.what}: --max_connection_age_s unset or 0: edges on dns:/// "
          f"would never re-resolve and find new replicas")
    workers = int(f.get("workers", 0))
    check(workers > 0, f"{ct.what}: --workers unset: the pool would size "
          f"itself to the node's cores, not the container's")
    check(workers <= math.ceil(cpu_cores(res["limits"]["cpu"])),
          f"{ct.what}: --workers {workers} above the CPU limit "
          f"{res['limits']['cpu']}")
    budget = int(f.get("memory_budget_mb", 0))
    check(0 < budget * 2**20 <= mem_bytes(res["limits"]["memory"]),
          f"{ct.what}: --memory_budget_mb {f.get('memory_budget_mb')} unset "
          f"or above the memory limit {res['limits']['memory']}")
    labels = pod_labels(w)
    name, ns = w["metadata"]["name"], w["metadata"].get("namespace")

    hpas = [h for h in r.of("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"].get("name") == name]
    check(len(hpas) == 1, f"{r.path}: {len(hpas)} autoscalers target "
          f"Deployment/{name}")
    hpa = hpas[0]
    hw = f"{r.path}: HorizontalPodAutoscaler/{hpa['metadata']['name']}"
    check(hpa["apiVersion"] == "autoscaling/v2", f"{hw}: {hpa['apiVersion']}")
    check(hpa["metadata"].get("namespace") == ns, f"{hw}: other namespace")
    ref = hpa["spec"]["scaleTargetRef"]
    check(ref.get("kind") == "Deployment" and ref.get("apiVersion") ==
          "apps/v1", f"{hw}: scaleTargetRef {ref}")
    lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    check(1 <= lo <= hi, f"{hw}: minReplicas {lo}, maxReplicas {hi}")
    check("replicas" not in w["spec"], f"{ct.what}: the Deployment sets "
          f"replicas, which every apply would reset under the autoscaler")
    metrics = hpa["spec"].get("metrics", [])
    check(metrics, f"{hw}: no metrics (it would default to CPU)")
    for m in metrics:
        check(m["type"] in ("Pods", "External"),
              f"{hw}: metric of type {m['type']}; the cloud scales on a "
              f"queueing metric from Prometheus, not CPU")
        metric = m[m["type"].lower()]["metric"]["name"]
        check(metric in adapter_metrics, f"{hw}: metric {metric} is served "
              f"by no prometheus-adapter rule (rules name "
              f"{sorted(adapter_metrics)})")
    log(f"  {hw}: {lo}..{hi} replicas on "
        f"{[m[m['type'].lower()]['metric']['name'] for m in metrics]}")

    pdbs = [p for p in r.of("PodDisruptionBudget")
            if p["metadata"].get("namespace") == ns and
            selects(p["spec"].get("selector", {}).get("matchLabels"), labels)]
    check(len(pdbs) == 1, f"{r.path}: {len(pdbs)} PodDisruptionBudgets "
          f"select the duet-cloud pods")
    pdb = pdbs[0]["spec"]
    check("minAvailable" in pdb or "maxUnavailable" in pdb,
          f"{r.path}: the PodDisruptionBudget sets neither minAvailable nor "
          f"maxUnavailable")
    if isinstance(pdb.get("minAvailable"), int):
        check(pdb["minAvailable"] < lo, f"{r.path}: PodDisruptionBudget "
              f"minAvailable {pdb['minAvailable']} >= minReplicas {lo}: a "
              f"node drain could never evict a cloud pod")


def check_edge(r, w, ct, gen, cloud):
    cw, cct, cgen = cloud
    ns = w["metadata"].get("namespace")
    check(w["kind"] == "StatefulSet", f"{ct.what}: duet-edge is a "
          f"{w['kind']}; its state needs one writer per volume (StatefulSet)")
    templates = {t["metadata"]["name"]: t
                 for t in w["spec"].get("volumeClaimTemplates", [])}
    vol, _ = mount_of(ct.c, ct.flags.get("state_dir", ""))
    check(vol in templates, f"{ct.what}: --state_dir "
          f"{ct.flags.get('state_dir')} is not on a volumeClaimTemplate "
          f"(volume {vol})")
    check(templates[vol]["spec"].get("accessModes") == ["ReadWriteOnce"],
          f"{ct.what}: the state volume is not ReadWriteOnce")
    check(pod_spec(w).get("securityContext", {}).get("fsGroup") == USER_ID,
          f"{ct.what}: no fsGroup {USER_ID}: the state volume would not be "
          f"writable by the image's user")
    gov = r.get("Service", w["spec"].get("serviceName"), ns)
    check(gov and selects(gov["spec"].get("selector"), pod_labels(w)),
          f"{ct.what}: serviceName {w['spec'].get('serviceName')} is not a "
          f"Service selecting the edge pods")
    for k in ("preset", "rows-scale", "seed"):
        check(gen.get(k) == cgen.get(k), f"{ct.what}: generates the model "
              f"with --{k} {gen.get(k)}, the cloud with {cgen.get(k)}: the "
              f"signatures would differ")

    target = ct.flags.get("cloud", "")
    m = re.fullmatch(r"dns:///([a-z0-9-]+)(\.[a-z0-9.-]+)?:(\d+)", target)
    check(m, f"{ct.what}: --cloud {target!r} is not dns:///SERVICE:PORT")
    svc = r.get("Service", m.group(1), ns)
    check(svc, f"{ct.what}: --cloud names Service {m.group(1)}, which is not "
          f"rendered")
    sw = f"{r.path}: Service/{m.group(1)}"
    check(svc["spec"].get("clusterIP") == "None",
          f"{sw}: not headless (clusterIP: None); round_robin needs every "
          f"pod IP in DNS")
    check(selects(svc["spec"].get("selector"), pod_labels(cw)),
          f"{sw}: selector {svc['spec'].get('selector')} does not select the "
          f"cloud pods {pod_labels(cw)}")
    check(not selects(svc["spec"].get("selector"), pod_labels(w)),
          f"{sw}: also selects the edge pods")
    cports = {p.get("name"): p["containerPort"] for p in cct.c["ports"]}
    port = int(m.group(3))
    sp = [p for p in svc["spec"].get("ports", []) if p["port"] == port]
    check(sp, f"{sw}: no port {port} (the edge's --cloud)")
    tp = sp[0].get("targetPort", port)
    check(cports.get(tp, tp) == cports["grpc"],
          f"{sw}: port {port} targets {tp}, the cloud serves gRPC on "
          f"{cports['grpc']}")
    log(f"  edge --cloud {target}: headless {sw} -> cloud gRPC "
        f"{cports['grpc']}; state on volumeClaimTemplate {vol}")


# ------------------------------------------------- monitoring config maps

def adapter_rules(all_rendered):
    """prometheus-adapter rules shipped in ConfigMaps: [(metric name served,
    series metric, metricsQuery, where)]. The rules file is YAML inside a
    ConfigMap, read line-based (one rule per `- seriesQuery:` item)."""
    rules = []
    for r in all_rendered:
        for cm in r.of("ConfigMap"):
            for key, text in cm.get("data", {}).items():
                if not re.search(r"^rules:", text, re.M):
                    continue
                for item in re.split(r"^\s*- (?=seriesQuery:)", text,
                                     flags=re.M)[1:]:
                    series = re.search(r"seriesQuery:\s*(['\"])(.*?)\1", item)
                    name = re.search(r"^\s*as:\s*['\"]?([\w:]+)", item, re.M)
                    query = re.search(r"metricsQuery:\s*(['\"])(.*?)\1", item)
                    where = f"{r.path}: ConfigMap/{cm['metadata']['name']}"
                    check(series and query, f"{where}: a rule without "
                          f"quoted seriesQuery and metricsQuery")
                    metric = re.match(r"[a-zA-Z_:][\w:]*", series.group(2))
                    check(metric, f"{where}: seriesQuery {series.group(2)} "
                          f"names no metric")
                    rules.append((name.group(1) if name else metric.group(0),
                                  metric.group(0), query.group(2), where))
    return rules


def check_monitoring(all_rendered, rules, bins):
    check(rules, "no prometheus-adapter rules (a ConfigMap with `rules:`) in "
          "any kustomization")
    servers = []
    for b in SERVERS:
        with open(bins.paths[b], "rb") as f:
            servers.append(f.read())
    for name, metric, query, where in rules:
        check(any(metric.encode() in s for s in servers),
              f"{where}: rule {name} reads {metric}, a name neither "
              f"duet-cloud nor duet-edge contains")
        for t in ("<<.LabelMatchers>>", "<<.GroupBy>>"):
            check(t in query, f"{where}: rule {name}: metricsQuery has no {t}")
    configs = [(r, cm, text) for r in all_rendered for cm in r.of("ConfigMap")
               for key, text in cm.get("data", {}).items()
               if key == "prometheus.yml"]
    check(configs, "no Prometheus configuration (ConfigMap key "
          "prometheus.yml) in any kustomization")
    for r, cm, text in configs:
        for label in ("namespace", "pod"):
            check(re.search(r"target_label:\s*" + label + r"\b", text),
                  f"{r.path}: ConfigMap/{cm['metadata']['name']}: no "
                  f"`{label}` label, which the adapter rules map to objects")
        check("kubernetes_sd_configs" in text,
              f"{r.path}: ConfigMap/{cm['metadata']['name']}: no "
              f"kubernetes_sd_configs")
    log(f"adapter rules {[n for n, *_ in rules]} on exported metrics "
        f"{sorted(set(m for _, m, *_ in rules))}")

    if shutil.which("promtool") is None:
        log("promtool not installed: Prometheus config and adapter queries "
            "not checked by it")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for i, (r, cm, text) in enumerate(configs):
            path = os.path.join(tmp, f"prometheus-{i}.yml")
            p = promtool_check_config(path, text)
            if "kubernetes_sd_configs not found" in p.stdout + p.stderr:
                # Debian's Prometheus is built without Kubernetes discovery:
                # check everything else with a static target in its place.
                log("promtool has no kubernetes_sd_configs (Debian's build): "
                    "checking the config with static_configs instead")
                text = re.sub(r"kubernetes_sd_configs:(\s+)- role: \w+",
                              r'static_configs:\1- targets: ["127.0.0.1:1"]',
                              text)
                p = promtool_check_config(path, text)
            check(p.returncode == 0, f"{r.path}: ConfigMap/"
                  f"{cm['metadata']['name']}: promtool check config:\n"
                  f"{p.stdout}{p.stderr}")
        path = os.path.join(tmp, "adapter_rules.yml")
        with open(path, "w") as f:
            f.write("groups:\n- name: adapter\n  rules:\n")
            for i, (name, metric, query, _) in enumerate(rules):
                q = (query.replace("<<.Series>>", metric)
                     .replace("<<.LabelMatchers>>",
                              'namespace="duet",pod=~"duet-cloud-.*"')
                     .replace("<<.GroupBy>>", "pod"))
                f.write(f"  - record: duet:adapter_rule_{i}\n"
                        f"    expr: {json.dumps(q)}\n")
        p = subprocess.run(["promtool", "check", "rules", path],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 0, f"an adapter metricsQuery does not parse:\n"
              f"{p.stdout}{p.stderr}")
    log(f"promtool: {len(configs)} Prometheus config(s) and "
        f"{len(rules)} adapter queries valid")


def promtool_check_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run(["promtool", "check", "config", path],
                          capture_output=True, text=True, timeout=30)


def check_retag():
    """A user's `images:` entry renames every container's image."""
    with tempfile.TemporaryDirectory(prefix="duet-k8s-retag-") as tmp:
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            f.write(f"bases:\n  - {os.path.relpath(BASE, tmp)}\n"
                    "images:\n  - name: duet\n"
                    "    newName: registry.invalid/duet-retag\n"
                    "    newTag: t1\n")
        r = Rendered(tmp, render(tmp))
    images = set()
    for w in r.workloads():
        for key in ("initContainers", "containers"):
            images.update(c["image"] for c in pod_spec(w).get(key, []))
    check(images == {"registry.invalid/duet-retag:t1"},
          f"an images: entry for `duet` left {images}")
    log("images: entry `duet` retags every container")


def main():
    global KUBECTL
    bins = stack.binaries(sys.argv[1:])
    missing = [b for b in ("cloud", "edge", "model", "probe") if b not in bins]
    check(not missing, f"missing arguments: {['--' + b for b in missing]}")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        stack.skip("kubectl is not installed (Debian package "
                   "kubernetes-client)")
    KUBECTL = kubectl
    v = subprocess.run([KUBECTL, "version", "--client"], capture_output=True,
                       text=True, timeout=30)
    log(f"{KUBECTL}: {(v.stdout or v.stderr).strip().splitlines()[0]}")
    b = Binaries({"duet-cloud": bins["cloud"], "duet-edge": bins["edge"],
                  "duet-model": bins["model"],
                  "duet-health-probe": bins["probe"]})

    dirs = kustomizations()
    rel = [os.path.relpath(d, K8S) for d in dirs]
    check("base" in rel, f"no deploy/k8s/base kustomization (found {rel})")
    check(any(d.startswith("overlays" + os.sep) for d in rel),
          f"no overlays (found {rel})")
    rendered = [Rendered(d, render(d)) for d in dirs]
    rules = adapter_rules(rendered)
    check_monitoring(rendered, rules, b)
    for r in rendered:
        check_kustomization(r, b, {name for name, *_ in rules})
    check(any(o["kind"] == "Deployment" for o in rendered[rel.index("base")]
              .objs), "deploy/k8s/base renders no duet-cloud Deployment")
    check_retag()


if __name__ == "__main__":
    stack.run(main)
