//! Demo handlers and the black-box conformance suite every yuyo adapter passes
#![deny(missing_docs)]
