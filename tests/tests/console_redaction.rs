//! The service's own console output goes through the same redaction as the exported data: the
//! `secrets` scenario logs a corpus of secrets (span fields, event fields, messages, URLs with
//! credentials, bearer tokens) and its stdout and stderr, in every console format, hold none of
//! them. Needs no server.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // tests fail loudly

use integra_observe_tests::run_scenario;

const BIN: &str = env!("CARGO_BIN_EXE_scenario");

#[test]
fn no_secret_of_the_corpus_is_printed_in_any_console_format() {
    for format in ["compact", "pretty", "json"] {
        let out = run_scenario(BIN, "secrets", &[("INTEGRA_LOG_FORMAT", format)]);
        assert!(out.status.success(), "{format}");
        let logs = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The lines were printed (so an empty grep means masked, not missing) …
        for printed in [
            "login failed",
            "retrying with Bearer [redacted]",
            "x.example/",
            "access_token=REDACTED",
            "[redacted]",
        ] {
            assert!(logs.contains(printed), "{format}: {printed:?} not printed");
        }
        // … and the span's fields with them, the secret ones masked.
        assert!(
            logs.contains("user.id"),
            "{format}: span fields not printed"
        );
        let leaks: Vec<&str> = logs
            .match_indices("CORPUS-")
            .map(|(i, _)| &logs[i..(i + 24).min(logs.len())])
            .collect();
        assert!(leaks.is_empty(), "{format}: printed secrets: {leaks:?}");
    }
}
