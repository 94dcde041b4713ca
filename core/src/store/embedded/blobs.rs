//! Blobs as files under a folder, written atomically (temporary file, then rename), the
//! owner's only (see `private`).

use super::private;
use crate::store::{check_blob_key, BlobStore, StoreError, StoreResult};
use async_trait::async_trait;
use std::path::PathBuf;

pub struct FolderBlobs {
    root: PathBuf,
}

impl FolderBlobs {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl BlobStore for FolderBlobs {
    async fn put(&self, key: &str, bytes: bytes::Bytes) -> StoreResult<()> {
        check_blob_key(key)?;
        let path = self.root.join(key);
        let dir = path.parent().expect("a checked key has a parent under the root").to_path_buf();
        tokio::task::spawn_blocking(move || {
            private::create_dir(&dir).map_err(|e| io_err("creating blob folder", e))?;
            let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().unwrap().to_string_lossy(), crate::domain::ids::random_sid("")));
            private::write_new(&tmp, &bytes).map_err(|e| io_err("writing blob", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io_err("renaming blob", e))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("blob task failed: {e}")))?
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_blob_key(key)?;
        match tokio::fs::read(self.root.join(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading blob", e)),
        }
    }

    /// A folder has no URLs of its own: the CRM signs a link to its own route.
    async fn presigned_url(&self, key: &str, _ttl: std::time::Duration) -> StoreResult<Option<String>> {
        check_blob_key(key)?;
        Ok(None)
    }
}
