//! Checks docs/operations.md against the code: config keys vs the `Config` struct, metrics vs the engine source.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use veto::config::Config;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn operations_md() -> String {
    std::fs::read_to_string(repo_file("docs/operations.md")).expect("docs/operations.md exists")
}

/// The first-column backticked names of the markdown table under the heading `## {section}`.
fn table_keys(doc: &str, section: &str) -> Vec<String> {
    let heading = format!("## {section}");
    let start = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/operations.md has no section {heading:?}"));
    let body = &doc[start + heading.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key.to_string()))
        .collect()
}

/// Dotted paths of every leaf of a TOML table; an empty table (a map such as
/// `kafka.librdkafka`) counts as a leaf.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => key_paths(inner, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn config_reference_lists_exactly_the_config_struct_keys() {
    let text = toml::to_string(&Config::default()).expect("the default config serializes");
    let table: toml::Table = text.parse().expect("serialized config parses back");
    let mut struct_keys = BTreeSet::new();
    key_paths(&table, "", &mut struct_keys);

    let documented = table_keys(&operations_md(), "Configuration reference");
    let doc_keys: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        doc_keys.len(),
        documented.len(),
        "a config key is documented twice"
    );

    let undocumented: Vec<_> = struct_keys.difference(&doc_keys).collect();
    let unknown: Vec<_> = doc_keys.difference(&struct_keys).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/operations.md vs Config: missing from the docs {undocumented:?}; documented but not in Config {unknown:?}"
    );
}

fn engine_sources(dir: &Path, out: &mut String) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            engine_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("readable source"));
        }
    }
}

#[test]
fn every_documented_metric_is_emitted_by_the_engine() {
    let metrics = table_keys(&operations_md(), "Metrics");
    assert!(
        metrics.len() >= 10,
        "the metrics table is missing or short: {metrics:?}"
    );
    let mut source = String::new();
    engine_sources(&repo_file("engine"), &mut source);
    let missing: Vec<_> = metrics
        .iter()
        .filter(|name| !source.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "documented in docs/operations.md but never emitted in engine/: {missing:?}"
    );
    for name in &metrics {
        assert!(
            name.starts_with("veto_"),
            "{name}: metric names start with veto_"
        );
    }
}
