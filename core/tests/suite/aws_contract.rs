//! The storage contract on the `aws` adapter (DynamoDB, SQS, S3), against `moto_server` with the
//! SDK calls production makes: an endpoint URL, test credentials, a region, path-style S3.
//! `scripts/test.sh` starts moto and sets `CALLKEEPER_TEST_AWS_ENDPOINT`; each case gets its own
//! freshly created table, queues and bucket.

use callkeeper_core::store::aws::{connect, create_resources, AwsNames};
use callkeeper_core::store::Stores;
use callkeeper_core::store_contract_tests;

const MAX_RECEIVES: u32 = 3;

async fn aws_stores() -> (Stores, ()) {
    let sdk = callkeeper_core::store::contract::require_moto().await;
    let mut b = [0u8; 6];
    callkeeper_core::secrets::fill_random(&mut b);
    let names = AwsNames::with_suffix(&hex::encode(b));
    create_resources(&sdk, &names, MAX_RECEIVES).await.expect("resources created on moto");
    (connect(&sdk, &names, MAX_RECEIVES).await.expect("connected"), ())
}

// Every case but `queue_stale_receipts_do_not_delete`: moto deletes a message on a stale
// receipt, where SQS (the reference) does not; see that case.
store_contract_tests!(@cases aws_stores();
    create_call_is_idempotent,
    transitions_are_conditional,
    stream_generations_move_once,
    concurrent_transitions_apply_once,
    patches_keep_unset_fields,
    heartbeats_only_while_streaming,
    active_calls_are_the_calls_on_the_line_and_pending_redirects,
    stream_figures_and_turns_are_kept,
    jobs_are_claimed_once_and_transcripts_kept,
    events_are_idempotent_by_key,
    traces_are_kept_in_chunk_order_once,
    recent_calls_newest_first,
    recent_calls_and_messages_page_without_gaps,
    recordings_upsert_and_keep_job_mark,
    messages_are_idempotent_and_on_the_timeline,
    message_status_only_moves_forward,
    queue_delivers_hides_and_acks,
    queue_dead_letters_after_max_receives_and_redrives,
    queue_release_keeps_the_error,
    blobs_round_trip,
    leads_merge_on_the_call_and_its_contact,
    profiles_are_kept_by_number,
    a_transfer_keeps_its_number_and_leaves_the_watchdogs_list,
    crm_users_are_added_once_changed_and_removed,
);
