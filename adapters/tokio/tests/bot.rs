//! The tokio REST client and bot against the mock Discord of `yuyo-conformance` on
//! 127.0.0.1: the shared cases of `yuyo_conformance::bot_cases`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

yuyo_conformance::bot_suite!(harness::TokioHarness);
