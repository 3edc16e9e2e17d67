//! The book's generated references match the code: each service's configuration
//! reference and JSON Schema come from its config types, so they cannot drift from the
//! loader, and the error-code table comes from `libs/core/src/code.rs`. `just gen-docs` rewrites them (this test with `BALLAST_BLESS=1`).

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

#[test]
fn the_configuration_references_match_the_config_types() {
    type Generate = fn(&str, &str, &str) -> Vec<String>;
    let services: [(&str, &str, &str, Generate); 4] = [
        (
            "gateway",
            "Gateway configuration",
            "ballast-gateway",
            service::<ballast_gateway::GatewayConfig>,
        ),
        (
            "retry-worker",
            "Retry worker configuration",
            "ballast-retry-worker",
            service::<ballast_retry_worker::WorkerConfig>,
        ),
        (
            "dedup",
            "Dedup service configuration",
            "ballast-dedup",
            service::<ballast_dedup_service::DedupConfig>,
        ),
        (
            "topology-service",
            "Topology service configuration",
            "ballast-topology",
            service::<ballast_topology::TopologyConfig>,
        ),
    ];
    let stale: Vec<String> = services
        .iter()
        .flat_map(|(name, title, binary, generate)| generate(name, title, binary))
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
