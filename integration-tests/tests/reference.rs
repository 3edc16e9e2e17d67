//! The book's generated references match the code: each service's configuration
//! reference and JSON Schema come from its config types, so they cannot drift from the
//! loader (the chart's values.schema.json holds the same schemas); the metrics reference
//! comes from the services' metric registries; the error-code table comes from
//! `libs/core/src/code.rs`. `just gen-docs` rewrites them (this test with
//! `BALLAST_BLESS=1`).

use ballast_telemetry::reference;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Compares `generated` with the committed file, or writes it under `BALLAST_BLESS=1`.
fn check(path: &str, generated: &str) -> Option<String> {
    let file = root().join(path);
    if std::env::var_os("BALLAST_BLESS").is_some() {
        std::fs::write(&file, generated).expect("write the reference");
        return None;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    (committed != generated).then(|| format!("{path} differs from what the code generates"))
}

const INTRO: &str = "Every key can be set in the YAML file (`--config`) or as an environment \
variable: `BALLAST_` and the key in upper case, sections joined by `__` \
(`kafka.write_timeout` is `BALLAST_KAFKA__WRITE_TIMEOUT`). Durations are written as \
`500ms`, `10s` or `2m`. Unknown keys are refused. `--dump-config` prints the effective \
config, and `--print-schema` the JSON Schema below, which editors that read JSON Schema \
(for example yaml-language-server) use to check a config file as it is written.";

fn service<C: ballast_telemetry::ServiceConfig + schemars::JsonSchema>(
    name: &str,
    title: &str,
    binary: &str,
) -> Vec<String> {
    let intro = format!(
        "The configuration of `{binary}` (or `ballast {name}`). Its JSON Schema is \
         `deploy/schema/{name}.schema.json`.\n\n{INTRO}"
    );
    let schema = serde_json::to_string_pretty(&reference::schema::<C>()).unwrap() + "\n";
    [
        check(
            &format!("docs/src/reference/config-{name}.md"),
            &reference::markdown::<C>(title, &intro),
        ),
        check(&format!("deploy/schema/{name}.schema.json"), &schema),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A service: its name in file names and in the chart, the title of its reference page,
/// its binary, its reference checks, and its config's JSON Schema.
type Service = (
    &'static str,
    &'static str,
    &'static str,
    fn(&str, &str, &str) -> Vec<String>,
    fn() -> serde_json::Value,
);

/// The four services, for every generated reference.
const SERVICES: [Service; 4] = [
    (
        "gateway",
        "Gateway configuration",
        "ballast-gateway",
        service::<ballast_gateway::GatewayConfig>,
        reference::schema::<ballast_gateway::GatewayConfig>,
    ),
    (
        "retry-worker",
        "Retry worker configuration",
        "ballast-retry-worker",
        service::<ballast_retry_worker::WorkerConfig>,
        reference::schema::<ballast_retry_worker::WorkerConfig>,
    ),
    (
        "dedup",
        "Dedup service configuration",
        "ballast-dedup",
        service::<ballast_dedup_service::DedupConfig>,
        reference::schema::<ballast_dedup_service::DedupConfig>,
    ),
    (
        "topology-service",
        "Topology service configuration",
        "ballast-topology",
        service::<ballast_topology::TopologyConfig>,
        reference::schema::<ballast_topology::TopologyConfig>,
    ),
];

#[test]
fn the_configuration_references_match_the_config_types() {
    let stale: Vec<String> = SERVICES
        .iter()
        .flat_map(|(name, title, binary, generate, _)| generate(name, title, binary))
        .collect();
    assert!(
        stale.is_empty(),
        "{}; run `just gen-docs` and commit the result",
        stale.join("; ")
    );
}

/// The generator walks nested sections into dotted keys, with each key's type and the
/// config's own default.
#[test]
fn the_reference_lists_nested_keys_with_types_and_defaults() {
    let settings = reference::settings::<ballast_gateway::GatewayConfig>();
    let get = |key: &str| {
        settings
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("{key} missing from {settings:?}"))
    };
    let timeout = get("kafka.write_timeout");
    assert_eq!(
        (timeout.kind.as_str(), timeout.default.as_str()),
        ("duration", "1s")
    );
    assert!(!timeout.description.is_empty());
    let backend = get("failover.backend");
    assert!(backend.kind.contains("`sqs`"), "{backend:?}");
    get("failover.sqs.min_retention");
    get("tls.client_auth");
    assert!(settings.iter().all(|s| !s.key.ends_with('.')));
}

/// The error-code chapter, from the one table every service maps its errors through.
fn error_codes() -> String {
    let mut page = String::from(
        "# Error codes\n\n<!-- Generated from `libs/core/src/code.rs` by `just gen-docs`; a test \
         fails when this page differs from what the code generates. -->\n\n\
         | code | gRPC equivalent | retryable | when |\n|---|---|---|---|\n",
    );
    for code in ballast_core::ErrorCode::ALL {
        let proto = code.proto().as_str_name();
        let grpc = format!("{:?}", code.grpc());
        // tonic's `InvalidArgument` is gRPC's INVALID_ARGUMENT.
        let mut grpc_name = String::new();
        for (i, c) in grpc.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                grpc_name.push('_');
            }
            grpc_name.push(c.to_ascii_uppercase());
        }
        page.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            proto.trim_start_matches("CODE_"),
            grpc_name,
            if code.retryable() { "yes" } else { "no" },
            code.when()
        ));
    }
    page.push_str(
        "\nA bad record fails alone; the rest of its batch goes on. Every service maps its \
         errors through this one table (`libs/core/src/code.rs`): a dedup, retry-admin or \
         topology call that fails whole answers with the gRPC status of its code.\n",
    );
    page
}

#[test]
fn the_error_code_table_matches_the_code() {
    if let Some(stale) = check("docs/src/error-codes.md", &error_codes()) {
        panic!("{stale}; run `just gen-docs` and commit the result");
    }
}

/// The metrics chapter, read from the registries each service registers into: a series
/// the code registers and the book does not name fails this test.
fn metrics_reference() -> (String, Vec<ballast_telemetry::catalog::Series>) {
    use ballast_telemetry::catalog::{markdown, series};
    let sections = [
        (
            "Gateway (`ballast-gateway`)",
            series(|r| {
                ballast_gateway::metrics::GatewayMetrics::register(r);
            }),
        ),
        (
            "Retry worker (`ballast-retry-worker`)",
            series(|r| {
                ballast_retry_worker::register_metrics(r);
            }),
        ),
        (
            "Dedup service (`ballast-dedup`)",
            series(|r| {
                ballast_dedup_service::register_metrics(r);
            }),
        ),
        (
            "Topology service (`ballast-topology`)",
            series(|r| {
                ballast_topology::register_metrics(r);
            }),
        ),
    ];
    let mut page = String::from(
        "# Metrics\n\n<!-- Generated from the services' metric registries by `just gen-docs`; a \
         test fails when this page differs from what the code registers. -->\n\n\
         Every service serves Prometheus metrics on its admin port (`admin_listen`) at \
         `/metrics`, with liveness at `/healthz` and readiness at `/readyz`. A label family \
         has a series only once something was counted under it; a gauge whose value is not \
         known (the age of the oldest entry of a queue the worker cannot see) has none \
         until it is, so that no made-up 0 reaches an alert. A histogram is served as its \
         `_bucket`, `_sum` and `_count` series.\n\n",
    );
    let mut all = Vec::new();
    for (heading, series) in sections {
        page.push_str(&markdown(heading, &series));
        page.push('\n');
        all.extend(series);
    }
    (page.trim_end().to_string() + "\n", all)
}

#[test]
fn the_metrics_reference_matches_the_registries() {
    if let Some(stale) = check("docs/src/reference/metrics.md", &metrics_reference().0) {
        panic!("{stale}; run `just gen-docs` and commit the result");
    }
}

/// The other direction: every `ballast_*` series the book, the README, the chart's alert
/// rules or its dashboard name is one the code registers.
#[test]
fn every_series_the_docs_and_the_chart_name_is_registered() {
    let (_, series) = metrics_reference();
    let known: std::collections::HashSet<String> = series
        .iter()
        .flat_map(|s| {
            let mut names = vec![s.name.clone()];
            if s.kind == "histogram" {
                names.extend(["_bucket", "_sum", "_count"].map(|x| format!("{}{x}", s.name)));
            }
            names
        })
        .collect();
    let mut files = vec![
        root().join("README.md"),
        root().join("deploy/helm/ballast/files/rules.yaml"),
        root().join("deploy/helm/ballast/files/dashboard.json"),
    ];
    for entry in std::fs::read_dir(root().join("docs/src")).expect("docs/src") {
        files.push(entry.expect("a docs entry").path());
    }
    for entry in std::fs::read_dir(root().join("docs/src/reference")).expect("docs/src/reference") {
        files.push(entry.expect("a reference entry").path());
    }
    let mut unknown = Vec::new();
    for f in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(f).expect("a readable file");
        for (at, _) in text.match_indices("ballast_") {
            if text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let len = text[at..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - at);
            let found = text[at..at + len].trim_end_matches('_');
            let after = &text[at + len..];
            if after.starts_with("::") {
                continue; // a crate's path, such as ballast_dedup_store::client
            }
            // `ballast_retry_queue_*` names the series it prefixes.
            let ok = if after.starts_with('*') {
                known.iter().any(|k| k.starts_with(found))
            } else {
                known.contains(found)
            };
            let service = ["gateway_", "retry_", "dedup_", "topology_"];
            if service
                .iter()
                .any(|p| found["ballast_".len()..].starts_with(p))
                && !ok
            {
                unknown.push(format!("{found} in {}", f.display()));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "series no service registers: {unknown:#?}"
    );
}

/// `schema`'s definitions renamed under `name.`, and its root as `name`, for a schema that
/// holds several services' configs side by side.
fn namespaced(
    name: &str,
    schema: &serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    fn rename(v: &mut serde_json::Value, name: &str) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(r)) = m.get_mut("$ref") {
                    if let Some(def) = r.strip_prefix("#/$defs/") {
                        *r = format!("#/$defs/{name}.{def}");
                    }
                }
                m.values_mut().for_each(|v| rename(v, name));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| rename(v, name)),
            _ => {}
        }
    }
    let mut root = schema.as_object().cloned().unwrap_or_default();
    root.remove("$schema");
    let defs = root.remove("$defs");
    let mut out = serde_json::Map::new();
    let mut root = serde_json::Value::Object(root);
    rename(&mut root, name);
    out.insert(name.to_string(), root);
    for (def, mut v) in defs
        .and_then(|d| d.as_object().cloned())
        .unwrap_or_default()
    {
        rename(&mut v, name);
        out.insert(format!("{name}.{def}"), v);
    }
    out
}

/// The chart's `values.schema.json`: its own keys are written by hand, and each service's
/// `config` refers to that service's config schema, which this writes under `$defs`. Helm
/// refuses values the schema does not allow, a mistyped key among them (`just
/// deploy-check` shows it).
#[test]
fn the_chart_values_schema_holds_each_service_s_config_schema() {
    let path = "deploy/helm/ballast/values.schema.json";
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(path)).expect("the chart's values.schema.json"),
    )
    .expect("values.schema.json is JSON");
    let mut generated = committed.clone();
    let mut defs = serde_json::Map::new();
    for (name, _, _, _, schema) in SERVICES {
        defs.extend(namespaced(name, &schema()));
    }
    generated["$defs"] = serde_json::Value::Object(defs);
    let text = serde_json::to_string_pretty(&generated).expect("JSON") + "\n";
    if let Some(stale) = check(path, &text) {
        panic!("{stale}; run `just gen-docs` and commit the result");
    }
}
