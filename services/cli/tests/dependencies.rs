//! The production binary carries no test harness: `cargo tree` of `ballast` (normal and
//! build dependencies, as `cargo build -p ballast` resolves them) has no testkit, no
//! development binary's crate, and `ballast-kafka` without its embedded mock cluster.

use std::process::Command;

/// `cargo tree` of one package, one `name|features` line per crate.
fn tree(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "-p", package, "-e", "normal,build"])
        .args(["--prefix", "none", "-f", "{p}|{f}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn crate_of(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn features_of<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| crate_of(l) == name)
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap_or("")
                .trim_end_matches(" (*)")
                .split(',')
        })
        .filter(|f| !f.is_empty())
        .collect()
}

#[test]
fn the_production_binary_has_no_test_harness_in_its_tree() {
    let lines = tree("ballast");
    assert!(
        lines.iter().any(|l| crate_of(l) == "ballast-gateway"),
        "the tree lists the services: {lines:?}"
    );
    for banned in ["ballast-testkit", "ballast-dev", "indicatif"] {
        let found: Vec<&String> = lines.iter().filter(|l| crate_of(l) == banned).collect();
        assert!(found.is_empty(), "ballast depends on {banned}: {found:?}");
    }
    let kafka = features_of(&lines, "ballast-kafka");
    assert!(
        !kafka.contains(&"embedded"),
        "ballast-kafka's mock cluster is in the production binary: {kafka:?}"
    );
}

/// The check above can fail: the development binary's tree has what it bans.
#[test]
fn the_development_binary_has_the_harnesses() {
    let lines = tree("ballast-dev");
    assert!(lines.iter().any(|l| crate_of(l) == "ballast-testkit"));
    assert!(features_of(&lines, "ballast-kafka").contains(&"embedded"));
}
