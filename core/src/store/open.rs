//! Choosing the storage adapter from the environment: `CALLKEEPER_STORE` (`embedded`, the
//! default) and `CALLKEEPER_DATA_DIR` for the embedded adapter's folder.

use super::{embedded, StoreError, StoreResult, Stores};
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "./callkeeper-data";

pub fn stores_from_env(max_receives: u32) -> StoreResult<Stores> {
    match std::env::var("CALLKEEPER_STORE").ok().as_deref().filter(|v| !v.is_empty()) {
        None | Some("embedded") => {
            let dir = std::env::var("CALLKEEPER_DATA_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(DEFAULT_DATA_DIR));
            embedded::open_stores(&dir, max_receives)
        }
        Some(other) => Err(StoreError::Invalid(format!(
            "CALLKEEPER_STORE={other} is not available in this build: the only adapter so far is `embedded`"
        ))),
    }
}
