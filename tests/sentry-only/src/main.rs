//! The scenarios of the `scenario` binary, built without the `otlp` feature: a service in phase 1
//! (Sentry errors) or phase 2 (Sentry performance), where Sentry owns span identity.
include!("../../src/scenarios.rs");
