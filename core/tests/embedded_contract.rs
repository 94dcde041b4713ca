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
