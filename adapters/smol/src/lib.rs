//! yuyo on smol/async-io: a Discord interactions server
#![deny(missing_docs)]
