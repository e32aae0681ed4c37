//! yuyo as a tower::Service, to mount in axum or serve with hyper
#![deny(missing_docs)]
