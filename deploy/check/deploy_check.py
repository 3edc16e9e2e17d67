#!/usr/bin/env python3
"""`just deploy-check`: checks everything under deploy/ that can be checked without a
Docker engine or a cluster.

1. The Dockerfile's Rust tag is at least the workspace's rust-version, which is at least
   every locked crate's rust-version; hadolint passes.
2. The Helm chart lints, and renders for each values file in deploy/helm/ballast/ci/;
   its values.schema.json makes Helm refuse a mistyped or mistyped-by-type value, in the
   chart's own keys and in each service's config.
3. Every rendered object validates strictly against the Kubernetes schemas (the chart's
   oldest and the newest supported version); the CRD objects (ScaledObject,
   ServiceMonitor, PrometheusRule) against theirs.
4. What a platform engineer expects of each workload: non-root, read-only root, no
   capabilities, probes, resources, a PDB, zone spread, termination grace above
   shutdown_grace; per-zone gateways with their rack.
5. Every rendered config and every example config under deploy/ loads with its service's
   real config loader (`--dump-config`).
6. promtool checks and unit-tests the alert rules; the rendered PrometheusRule is the
   rule file.
7. The PostgreSQL autoscaling query runs against the failover schema on a real server.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ballast"
WORK = ROOT / "target" / "deploy-check"
KUBE_VERSIONS = ["1.31.0", "1.37.0"]
BINARIES = {
    "gateway": "ballast-gateway",
    "retry-worker": "ballast-retry-worker",
    "dedup": "ballast-dedup",
    "topology": "ballast-topology",
}
failures = []


def step(msg):
    print(f"deploy-check: {msg}", flush=True)


def fail(msg):
    print(f"deploy-check: FAIL {msg}", flush=True)
    failures.append(msg)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def check_image():
    step("Dockerfile: Rust tag, rust-version, hadolint")
    meta = json.loads(
        run(["cargo", "metadata", "--format-version", "1", "--locked"], cwd=ROOT, check=True).stdout
    )
    workspace = set(meta["workspace_members"])
    ours = {p["rust_version"] for p in meta["packages"] if p["id"] in workspace}
    check(len(ours) == 1, f"workspace crates disagree on rust-version: {ours}")
    rust_version = ours.pop()
    needed = max(
        (version_tuple(p["rust_version"]), p["name"])
        for p in meta["packages"]
        if p["rust_version"] and p["id"] not in workspace
    )
    check(
        version_tuple(rust_version) >= needed[0],
        f"rust-version {rust_version} is older than {needed[1]} needs ({'.'.join(map(str, needed[0]))})",
    )
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    tags = re.findall(r"^FROM rust:([0-9.]+)", dockerfile, re.M)
    if check(tags, "the Dockerfile has no FROM rust:<version> stage"):
        check(
            version_tuple(tags[0]) >= version_tuple(rust_version),
            f"Dockerfile rust:{tags[0]} is older than rust-version {rust_version}",
        )
        step(f"  rust:{tags[0]} >= rust-version {rust_version} >= {needed[1]}'s {'.'.join(map(str, needed[0]))}")
    check("USER 10001" in dockerfile, "the runtime image's user is not numeric")
    # The image ships the operator CLI and the four services, never the development binary.
    built = set(re.findall(r"-p (\S+)", dockerfile))
    shipped = {"ballast", "ballast-gateway", "ballast-retry-worker", "ballast-dedup-service", "ballast-topology"}
    check(built == shipped, f"the Dockerfile builds {sorted(built)}, not {sorted(shipped)}")
    for line in re.findall(r"^COPY (deploy/\S+.*?) /etc/ballast/", dockerfile, re.M):
        for f in line.split():
            check((ROOT / f).exists(), f"the Dockerfile copies {f}, which does not exist")
    r = run(["hadolint", str(ROOT / "deploy" / "Dockerfile")])
    check(r.returncode == 0, f"hadolint: {r.stdout}{r.stderr}")


def render_all():
    import helm_python

    step("helm lint and render")
    values_files = sorted((CHART / "ci").glob("*.yaml"))
    check(len(values_files) >= 4, "expected at least four values files in ci/")
    rendered = {}
    for vf in [None, *values_files]:
        values = yaml.safe_load(vf.read_text()) if vf else {}
        name = vf.stem if vf else "defaults"
        lint = helm_python.lint(str(CHART), values, strict=True, namespace="ballast", quiet=False)
        messages = [m for m in (lint.get("messages") or []) if m.get("severity", 0) >= 2] if isinstance(lint, dict) else []
        errors = lint.get("errors") if isinstance(lint, dict) else None
        check(not errors and not messages, f"helm lint ({name}): {errors or messages}")
        chart = helm_python.Chart.load(str(CHART))
        out = chart.render(values, name="ballast", namespace="ballast")
        docs = []
        for path, text in sorted(out.items()) if isinstance(out, dict) else []:
            if not path.endswith((".yaml", ".yml")):
                continue
            docs += [d for d in yaml.safe_load_all(text) if d]
        check(docs, f"render ({name}) produced no objects")
        rendered[name] = docs
        step(f"  {name}: {len(docs)} objects: " + ", ".join(sorted({d['kind'] for d in docs})))
    return rendered


# Values Helm must refuse through values.schema.json, with the path its message names.
BAD_VALUES = [
    ({"gateway": {"replicaz": 3}}, "/gateway"),
    ({"gateway": {"config": {"kafka": {"write_timout": "1s"}}}}, "/gateway/config/kafka"),
    ({"retryWorker": {"config": {"retry": {"max_attempts": "five"}}}},
     "/retryWorker/config/retry/max_attempts"),
    ({"dedup": {"config": {"redis": {"ulr": "redis://r:6379"}}}}, "/dedup/config/redis"),
    ({"topology": {"config": {"kafak": {}}}}, "/topology/config"),
    ({"tls": {"clientAuth": "requird"}}, "/tls/clientAuth"),
]


def check_values_schema():
    import helm_python

    step("values.schema.json: Helm refuses mistyped values")
    chart = helm_python.Chart.load(str(CHART))
    for values, where in BAD_VALUES:
        try:
            chart.render(values, name="ballast", namespace="ballast")
            fail(f"the chart renders {values}, which values.schema.json should refuse")
        except helm_python.HelmError as e:
            check(f"at '{where}'" in str(e), f"refusing {values}, Helm names another place: {e}")
    step(f"  {len(BAD_VALUES)} mistyped values refused, each at its path")


CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


def validate_schemas(rendered):
    step("kubernetes-validate --strict; CRD schemas")
    node_dir = WORK / "node"
    for name, docs in rendered.items():
        core = [d for d in docs if d["kind"] not in CRD_KINDS]
        crds = [d for d in docs if d["kind"] in CRD_KINDS]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump_all(core))
            for kv in KUBE_VERSIONS:
                r = run(["kubernetes-validate", "--strict", "--quiet", "-k", kv, str(path)])
                check(r.returncode == 0, f"kubernetes-validate {kv} ({name}): {r.stdout}{r.stderr}")
        if crds:
            shutil.copy(Path(__file__).with_name("crds.mjs"), node_dir / "crds.mjs")
            r = run(["node", str(node_dir / "crds.mjs")], input=json.dumps(crds))
            check(r.returncode == 0, f"CRD schemas ({name}): {r.stdout}{r.stderr}")


def containers(doc):
    spec = doc["spec"]["template"]["spec"]
    return spec, spec["containers"]


def config_of(docs, workload):
    """The config.yaml a workload mounts."""
    spec, _ = containers(workload)
    cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    return yaml.safe_load(cm["data"]["config.yaml"])


def seconds(s):
    m = re.fullmatch(r"(\d+)s", str(s))
    return int(m.group(1)) if m else None


def check_workloads(rendered):
    step("workload conventions")
    for name, docs in rendered.items():
        values = yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text()) if name != "defaults" else {}
        workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
        pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
        for w in workloads:
            wname = f"{name}: {w['kind']}/{w['metadata']['name']}"
            spec, cs = containers(w)
            psc = spec.get("securityContext", {})
            check(psc.get("runAsNonRoot") is True and isinstance(psc.get("runAsUser"), int), f"{wname}: not runAsNonRoot with a numeric user")
            check(spec.get("topologySpreadConstraints"), f"{wname}: no topologySpreadConstraints")
            for c in cs:
                sc = c.get("securityContext", {})
                check(sc.get("readOnlyRootFilesystem") is True, f"{wname}: root filesystem is writable")
                check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{wname}: capabilities not all dropped")
                check(sc.get("allowPrivilegeEscalation") is False, f"{wname}: privilege escalation allowed")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    check(probe in c, f"{wname}: no {probe}")
                check(c.get("resources", {}).get("requests"), f"{wname}: no resource requests")
            cfg = config_of(docs, w)
            grace = seconds(cfg.get("shutdown_grace"))
            check(
                grace is not None and spec["terminationGracePeriodSeconds"] > grace,
                f"{wname}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} is not above shutdown_grace {cfg.get('shutdown_grace')}",
            )
            sel = w["spec"]["selector"]["matchLabels"]
            covered = [p for p in pdbs if all(sel.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())]
            check(covered, f"{wname}: no PodDisruptionBudget selects it")
            tls_on = values.get("tls", {}).get("enabled")
            probe = cs[0]["readinessProbe"]
            if tls_on:
                check(probe.get("httpGet", {}).get("path") == "/readyz", f"{wname}: TLS on, readiness must use /readyz")
            else:
                check("grpc" in probe, f"{wname}: readiness is not a gRPC probe")
        zones = values.get("gateway", {}).get("zones", yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["zones"])
        gateways = [d for d in workloads if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]
        check(len(gateways) == max(1, len(zones or [])), f"{name}: {len(gateways)} gateway Deployments for {len(zones or [])} zones")
        for z in zones or []:
            g = next((d for d in gateways if d["metadata"]["name"].endswith("-" + z["zone"])), None)
            if not check(g, f"{name}: no gateway Deployment for zone {z['zone']}"):
                continue
            spec, cs = containers(g)
            env = {e["name"]: e.get("value") for e in cs[0].get("env", [])}
            check(env.get("BALLAST_RACK") == z.get("rack", z["zone"]), f"{name}: gateway in {z['zone']} has rack {env.get('BALLAST_RACK')}")
            terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            check(terms[0]["matchExpressions"][0]["values"] == [z["zone"]], f"{name}: gateway in {z['zone']} is not pinned to it")
        svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-gateway"))
        check(svc["spec"].get("trafficDistribution") == "PreferClose", f"{name}: the gateway Service does not prefer same-zone endpoints")
        for kind in ("ServiceMonitor", "HorizontalPodAutoscaler"):
            check(any(d["kind"] == kind for d in docs) or values.get("gateway", {}).get("autoscaling", {}).get("enabled") is False, f"{name}: no {kind}")


PLACEHOLDERS = {
    "database_url_file": "postgres://ballast:secret@db:5432/ballast?sslmode=verify-full",
    "url_file": "rediss://:secret@redis:6380",
    "sha256_file": "0" * 64,
}


def with_mounted_files(cfg, root):
    """The config with every `*_file` path moved under `root`, where a placeholder of the
    right shape stands in for the Secret or certificate Kubernetes would mount."""
    def walk(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k.endswith("_file") and isinstance(v, str) and v.startswith("/"):
                    target = root / v.lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(PLACEHOLDERS.get(k, "placeholder") + "\n")
                    out[k] = str(target)
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    return walk(cfg)


def check_configs(rendered):
    step("configs load with the services' own loaders")
    bindir = Path(os.environ.get("BALLAST_BIN_DIR", ROOT / "target" / "debug"))
    for bin_name in BINARIES.values():
        if not (bindir / bin_name).exists():
            fail(f"{bindir / bin_name} is missing: build the workspace first (cargo build)")
            return
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for name, docs in rendered.items():
            for w in (d for d in docs if d["kind"] == "Deployment"):
                component = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                path = Path(tmp) / f"{name}-{w['metadata']['name']}.yaml"
                path.write_text(yaml.safe_dump(with_mounted_files(config_of(docs, w), Path(tmp) / "root")))
                jobs.append((f"{name}: {w['metadata']['name']}", BINARIES[component], path))
        for service, bin_name in BINARIES.items():
            example = ROOT / "deploy" / f"{service}.yaml"
            if check(example.exists(), f"no example config {example}"):
                jobs.append((f"example {example.name}", bin_name, example))
        for label, bin_name, path in jobs:
            r = run([str(bindir / bin_name), "--config", str(path), "--dump-config"], env={**os.environ, "RUST_BACKTRACE": "0"})
            check(r.returncode == 0, f"{label}: {bin_name} refuses its config: {r.stderr.strip()[:600]}")
        step(f"  {len(jobs)} configs loaded")
        check_editor_schemas(jobs, bindir)


# The JSON Schema each service prints (--print-schema), committed for editors.
SCHEMAS = {
    "ballast-gateway": "gateway",
    "ballast-retry-worker": "retry-worker",
    "ballast-dedup": "dedup",
    "ballast-topology": "topology-service",
}


def check_editor_schemas(jobs, bindir):
    """Every config the services load also passes their committed JSON Schema (what an
    editor checks), the schema is the one the binary prints, and a mistyped key fails it."""
    import jsonschema

    step("the editors' JSON Schemas (deploy/schema) against the same configs")
    validators = {}
    for bin_name, name in SCHEMAS.items():
        path = ROOT / "deploy" / "schema" / f"{name}.schema.json"
        if not check(path.exists(), f"{path} is missing: run just gen-docs"):
            return
        schema = json.loads(path.read_text())
        printed = run([str(bindir / bin_name), "--print-schema"])
        check(printed.returncode == 0 and json.loads(printed.stdout or "null") == schema,
              f"{bin_name} --print-schema differs from {path.name}: run just gen-docs")
        validators[bin_name] = jsonschema.Draft202012Validator(schema)
    for label, bin_name, path in jobs:
        config = yaml.safe_load(Path(path).read_text()) or {}
        errors = [e.message for e in validators[bin_name].iter_errors(config)]
        check(not errors, f"{label}: the {SCHEMAS[bin_name]} schema refuses it: {errors[:3]}")
        if label.startswith("example"):
            typo = {**config, "kafak": {"bootstrap_servers": "b:9092"}}
            check(any("kafak" in e.message for e in validators[bin_name].iter_errors(typo)),
                  f"{label}: the {SCHEMAS[bin_name]} schema accepts a mistyped key")
    step(f"  {len(jobs)} configs pass their schema; a mistyped key fails each example's")


def check_rules(rendered):
    step("promtool check rules / test rules")
    rules = CHART / "files" / "rules.yaml"
    r = run(["promtool", "check", "rules", str(rules)])
    check(r.returncode == 0, f"promtool check rules: {r.stdout}{r.stderr}")
    r = run(["promtool", "test", "rules", "rules_test.yaml"], cwd=CHART / "tests")
    check(r.returncode == 0, f"promtool test rules: {r.stdout}{r.stderr}")
    source = yaml.safe_load(rules.read_text())
    alerts = [rule["alert"] for g in source["groups"] for rule in g["rules"]]
    tested = (CHART / "tests" / "rules_test.yaml").read_text()
    for a in alerts:
        check(f"alertname: {a}" in tested, f"alert {a} has no promtool test")
    # Each alert's runbook_url names a section of the built book's runbook page.
    runbook = ROOT / "docs" / "book" / "runbook.html"
    if not check(runbook.exists(), f"{runbook} is missing: build the book first (just docs)"):
        return
    anchors = set(re.findall(r'\bid="([^"]+)"', runbook.read_text(encoding="utf-8")))
    base = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["runbookUrl"]
    linked = 0
    for name, docs in rendered.items():
        for d in docs:
            if d["kind"] != "PrometheusRule":
                continue
            spec = copy.deepcopy(d["spec"])
            for g in spec["groups"]:
                for rule in g["rules"]:
                    url = rule["annotations"].pop("runbook_url", None)
                    if not check(url, f"{name}: alert {rule['alert']} has no runbook_url"):
                        continue
                    page, _, anchor = url.partition("#")
                    if name == "defaults":
                        check(page == base, f"alert {rule['alert']}: runbook_url {url} is not on {base}")
                    check(anchor in anchors, f"alert {rule['alert']}: runbook.html has no section #{anchor}")
                    linked += 1
            check(spec == source, f"{name}: the rendered PrometheusRule differs from files/rules.yaml")
    step(f"  {len(alerts)} alerts, each unit-tested; {linked} runbook links, each to a runbook section")


def check_keda_query():
    step("the PostgreSQL scaler's query against the failover schema")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    query = values["retryWorker"]["autoscaling"]["postgresql"]["query"]
    migration = (ROOT / "libs" / "failover" / "migrations" / "postgres" / "0001_failover.sql").read_text()
    sql = f"BEGIN;\nCREATE SCHEMA deploy_check;\nSET search_path TO deploy_check;\n{migration}\n{query};\nROLLBACK;\n"
    r = run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-At"], input=sql)
    check(r.returncode == 0 and "0" in r.stdout.split(), f"psql: {r.stdout}{r.stderr}")


def main():
    WORK.mkdir(parents=True, exist_ok=True)
    check_image()
    rendered = render_all()
    check_values_schema()
    validate_schemas(rendered)
    check_workloads(rendered)
    check_configs(rendered)
    check_rules(rendered)
    check_keda_query()
    if failures:
        print(f"deploy-check: {len(failures)} failures", flush=True)
        sys.exit(1)
    step("all checks passed")


if __name__ == "__main__":
    main()
