//! Choosing the storage adapter: `CALLKEEPER_STORE` (`embedded`, the default, or `aws`), with
//! `CALLKEEPER_DATA_DIR` for the embedded adapter's folder and the `aws` adapter's names and SDK
//! settings from the environment (see [`super::aws`]).

use super::{aws, embedded, StoreError, StoreResult, Stores};
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "./callkeeper-data";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Aws,
}

impl StoreKind {
    pub fn parse(value: &str) -> StoreResult<StoreKind> {
        match value {
            "embedded" => Ok(StoreKind::Embedded),
            "aws" => Ok(StoreKind::Aws),
            other => Err(StoreError::Invalid(format!("CALLKEEPER_STORE must be `embedded` or `aws`, got {other:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Aws => "aws",
        }
    }
}

/// Opens the stores of `kind`: the embedded ones in `data_dir`, or the AWS ones.
pub async fn open(kind: StoreKind, data_dir: &Path, max_receives: u32) -> StoreResult<Stores> {
    match kind {
        StoreKind::Embedded => embedded::open_stores(data_dir, max_receives),
        StoreKind::Aws => aws::connect(&aws::sdk_config().await, &aws::AwsNames::from_env(), max_receives).await,
    }
}

/// What a deployed function or the relay runs on, from the environment alone.
pub async fn stores_from_env(max_receives: u32) -> StoreResult<Stores> {
    let kind = match std::env::var("CALLKEEPER_STORE").ok().filter(|v| !v.is_empty()) {
        None => StoreKind::Embedded,
        Some(value) => StoreKind::parse(&value)?,
    };
    let dir = std::env::var("CALLKEEPER_DATA_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(DEFAULT_DATA_DIR));
    open(kind, &dir, max_receives).await
}
