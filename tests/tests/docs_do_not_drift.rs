//! Docs that cannot drift: docs/configuration.md lists exactly the variables the code reads, and
//! the facade's feature table lists exactly the features in its Cargo.toml.
//! `INTEGRA_BLESS=1 cargo test -p integra-observe-tests --test docs_do_not_drift` rewrites the
//! generated table after a variable was added.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use std::path::{Path, PathBuf};

use integra_observe::ENV_VARS;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const START: &str =
    "<!-- env-table:start (generated from integra_observe_core::ENV_VARS; do not edit) -->";
const END: &str = "<!-- env-table:end -->";

fn generated_table() -> String {
    let mut t = String::from("| variable | meaning | default | example |\n|---|---|---|---|\n");
    for v in ENV_VARS {
        t.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name, v.meaning, v.default, v.example
        ));
    }
    t
}

#[test]
fn configuration_md_has_the_generated_variable_table() {
    let doc = read("docs/configuration.md");
    let (Some(s), Some(e)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/configuration.md lacks the markers {START} … {END}")
    };
    let current = doc[s + START.len()..e].trim();
    let expected = generated_table();
    if current != expected.trim() {
        if std::env::var("INTEGRA_BLESS").is_ok() {
            let new = format!(
                "{}{START}\n{expected}{END}{}",
                &doc[..s],
                &doc[e + END.len()..]
            );
            std::fs::write(root().join("docs/configuration.md"), new).expect("write");
            return;
        }
        panic!(
            "docs/configuration.md is out of date; run with INTEGRA_BLESS=1. Expected:\n{expected}"
        );
    }
}

#[test]
fn every_documented_variable_is_read_by_the_code_and_no_other() {
    let mut sources = String::new();
    for dir in [
        "crates/integra-observe-core/src",
        "crates/integra-observe-sentry/src",
        "crates/integra-observe-otlp/src",
        "crates/integra-observe/src",
        "crates/integra-observe-cloudflare/src",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).expect("dir").flatten() {
            if entry.file_name() != "env.rs" {
                sources.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    for v in ENV_VARS {
        assert!(
            sources.contains(&format!("\"{}\"", v.name)),
            "{} is documented but no code reads it",
            v.name
        );
    }
    // Every variable-looking string literal the code uses is documented.
    for lit in sources.split('"').skip(1).step_by(2) {
        let looks_like_var = ["SENTRY_", "OTEL_", "INTEGRA_", "RUST_LOG"]
            .iter()
            .any(|p| lit.starts_with(p))
            && lit
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
        if looks_like_var {
            assert!(
                ENV_VARS.iter().any(|v| v.name == lit),
                "the code reads {lit} but docs/configuration.md does not list it"
            );
        }
    }
}

fn table_features(readme: &str) -> Vec<String> {
    let section = readme
        .split("## Features")
        .nth(1)
        .expect("a Features section");
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn feature_table_matches_cargo_toml() {
    let manifest = read("crates/integra-observe/Cargo.toml");
    let section = manifest
        .split("[features]")
        .nth(1)
        .expect("features")
        .split("\n[")
        .next()
        .unwrap_or("");
    let mut in_manifest: Vec<String> = section
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.starts_with('#') && !k.is_empty() && k != "default")
        .collect();
    let mut documented = table_features(&read("crates/integra-observe/README.md"));
    in_manifest.sort();
    documented.sort();
    assert_eq!(
        documented, in_manifest,
        "README feature table vs Cargo.toml [features]"
    );
    let top = table_features(&read("README.md"));
    assert_eq!(
        top.iter().collect::<std::collections::BTreeSet<_>>(),
        documented.iter().collect(),
        "top-level README feature table"
    );
}
