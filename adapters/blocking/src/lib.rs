//! yuyo on std threads: a Discord interactions server with no async runtime
#![deny(missing_docs)]
