//! The storage contract on the embedded adapter (SQLite and a folder).

use callkeeper_core::store::embedded::open_stores;

async fn stores() -> (callkeeper_core::store::Stores, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stores = open_stores(dir.path(), 3).unwrap();
    (stores, dir)
}

callkeeper_core::store_contract_tests!(stores());

/// Reopening the data folder finds everything, and the schema migration runs once.
#[tokio::test]
async fn data_survives_a_restart() {
    use callkeeper_core::call::CallStatus;
    use callkeeper_core::store::contract::new_call;
    let dir = tempfile::tempdir().unwrap();
    let call = new_call(CallStatus::AwaitingStream);
    {
        let stores = open_stores(dir.path(), 3).unwrap();
        stores.calls.create_call(&call).await.unwrap();
    }
    let stores = open_stores(dir.path(), 3).unwrap();
    assert_eq!(stores.calls.get_call(&call.call_sid).await.unwrap().unwrap().status, CallStatus::AwaitingStream);
}

/// Callers' numbers, words and voices are the owner's only: folders 0700, files 0600, even
/// under a permissive umask and for a folder an older version left readable.
#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_and_everything_in_it_are_the_owners_only() {
    use callkeeper_core::call::CallStatus;
    use callkeeper_core::store::contract::new_call;
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stores = open_stores(&dir, 3).unwrap();
    stores.calls.create_call(&new_call(CallStatus::AwaitingStream)).await.unwrap();
    stores.blobs.put("recordings/2026/12/01/CA1/RE1.wav", bytes::Bytes::from_static(b"RIFF")).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the data folder");
    for folder in ["blobs", "blobs/recordings", "blobs/recordings/2026/12/01/CA1"] {
        assert_eq!(mode(&dir.join(folder)), 0o700, "{folder}");
    }
    for file in ["callkeeper.sqlite3", "callkeeper.sqlite3-wal", "callkeeper.sqlite3-shm", "blobs/recordings/2026/12/01/CA1/RE1.wav"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}
