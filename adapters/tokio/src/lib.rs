//! yuyo on tokio: a Discord interactions server
#![deny(missing_docs)]
