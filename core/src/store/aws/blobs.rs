//! `BlobStore` on S3, every object encrypted at rest (SSE-S3).

use super::sdk_error;
use crate::store::{check_blob_key, BlobStore, StoreError, StoreResult};
use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_s3::Client;
use std::time::Duration;

#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: Client, bucket: &str) -> S3Blobs {
        S3Blobs { client, bucket: bucket.to_string() }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: bytes::Bytes) -> StoreResult<()> {
        check_blob_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(crate::store::blob_content_type(key).0)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        check_blob_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.body.collect().await.map_err(super::unavailable)?.into_bytes().to_vec())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn presigned_url(&self, key: &str, ttl: Duration) -> StoreResult<Option<String>> {
        check_blob_key(key)?;
        let config = PresigningConfig::expires_in(ttl).map_err(|e| StoreError::Invalid(format!("presigned URL lifetime: {e}")))?;
        // The link says what the object is served as, whatever it was stored with.
        let (content_type, inline) = crate::store::blob_content_type(key);
        let get = self.client.get_object().bucket(&self.bucket).key(key).response_content_type(content_type);
        let get = if inline { get } else { get.response_content_disposition("attachment") };
        let request = get.presigned(config).await.map_err(sdk_error)?;
        Ok(Some(request.uri().to_string()))
    }
}
