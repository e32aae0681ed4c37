//! Sans-IO core of yuyo.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod http1;
pub mod lifespan;
