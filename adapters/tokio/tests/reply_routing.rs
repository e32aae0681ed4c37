//! Replies through REST, end to end: a `Bot`'s server on 127.0.0.1 answering signed
//! interactions, with the mock Discord REST API on 127.0.0.1 receiving the late replies,
//! the callbacks of oversized files and streamed uploads: the shared cases of
//! `yuyo_conformance::reply_routing_cases`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use harness::TokioHarness;

yuyo_conformance::reply_routing_suite!(TokioHarness);
