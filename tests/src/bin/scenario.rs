//! Plays a service for the end-to-end tests: `scenario NAME` initialises integra-observe from the
//! environment the test gives it, does one thing a real service does, and prints a last line
//! `REPORT {json}` with the ids the test needs to look the data up in the real servers.
include!("../scenarios.rs");
