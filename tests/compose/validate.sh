#!/usr/bin/env bash
# Validates the deployment files without Docker: docker-compose.yml (YAML + references),
# deploy/prometheus.yml (promtool check config), the Grafana provisioning YAML and dashboard JSON
# (structure, datasource, and every PromQL expression parsed by promtool check rules).
# Installs Debian's `prometheus` package (for promtool) and python3-yaml when missing and root.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
python3 -c 'import yaml' 2>/dev/null || need_apt+=(python3-yaml)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

echo "==> promtool check config deploy/prometheus.yml"
promtool check config deploy/prometheus.yml

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "==> docker-compose.yml, Grafana provisioning and dashboard"
python3 - "$tmp/dashboard_rules.yml" <<'PY'
import json, os, re, sys
import yaml

def fail(msg):
    sys.exit(f"validate: FAIL: {msg}")

compose = yaml.safe_load(open("docker-compose.yml"))
services = compose.get("services") or fail("docker-compose.yml has no services")
for name in ("kafka", "topic-init", "veto", "loadgen", "prometheus", "grafana"):
    if name not in services:
        fail(f"docker-compose.yml lacks service {name!r}")
named_volumes = set((compose.get("volumes") or {}).keys())
for name, svc in services.items():
    image = svc.get("image")
    if image is None and "build" not in svc:
        fail(f"service {name} has neither image nor build")
    if image and image != "veto:local" and (":" not in image or image.endswith(":latest")):
        fail(f"service {name}: image {image!r} is not pinned to a version")
    deps = svc.get("depends_on") or {}
    for dep in deps:
        if dep not in services:
            fail(f"service {name} depends on unknown service {dep!r}")
    for vol in svc.get("volumes") or []:
        src = vol.split(":", 1)[0]
        if src.startswith("."):
            if not os.path.exists(src):
                fail(f"service {name} mounts missing path {src}")
        elif src not in named_volumes:
            fail(f"service {name} uses undeclared volume {src!r}")
build = services["veto"]["build"]
if not os.path.exists(os.path.join(build.get("context", "."), build.get("dockerfile", "Dockerfile"))):
    fail("the veto service's Dockerfile is missing")
kafka_env = services["kafka"]["environment"]
if "broker,controller" not in str(kafka_env.get("KAFKA_PROCESS_ROLES")):
    fail("kafka must run in KRaft combined mode")
listeners = str(kafka_env.get("KAFKA_ADVERTISED_LISTENERS"))
if "kafka:" not in listeners or "localhost:" not in listeners:
    fail("kafka must advertise both an in-network and a host listener")

prom = yaml.safe_load(open("deploy/prometheus.yml"))
targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
if "veto:9464" not in targets:
    fail("prometheus does not scrape veto:9464")

ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
ds_uids = {d["uid"] for d in ds["datasources"]}
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/veto.yml"))
paths = [p["options"]["path"] for p in prov["providers"]]
grafana_volumes = services["grafana"]["volumes"]
for p in paths:
    if not any(v.split(":")[1] == p for v in grafana_volumes):
        fail(f"dashboard provider path {p} is not mounted into grafana")

dash = json.load(open("deploy/grafana/dashboards/veto.json"))
panels = dash.get("panels") or fail("dashboard has no panels")
ids = [p["id"] for p in panels]
if len(ids) != len(set(ids)):
    fail("dashboard panel ids are not unique")
rules = []
metrics_used = set()
for p in panels:
    if p["datasource"]["uid"] not in ds_uids:
        fail(f"panel {p['title']!r} uses unknown datasource {p['datasource']['uid']}")
    for t in p["targets"]:
        rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": t["expr"]})
        metrics_used.update(re.findall(r"\bveto_[a-z0-9_]+", t["expr"]))
titles = " ".join(p["title"].lower() for p in panels)
for topic in ("throughput", "outcome", "latency", "timer lateness", "lag", "rule hits", "reloads"):
    if topic not in titles:
        fail(f"dashboard has no panel about {topic}")
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"compose: {len(services)} services; dashboard: {len(panels)} panels, {len(rules)} queries")
print("metrics used: " + " ".join(sorted(metrics_used)))
PY

echo "==> promtool check rules (every dashboard query parses as PromQL)"
promtool check rules "$tmp/dashboard_rules.yml"
echo "validate: OK"
