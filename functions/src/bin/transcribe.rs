//! The transcription worker Lambda, triggered by the transcription queue.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    callkeeper_functions::lambda::run_worker(callkeeper_functions::lambda::Worker::Transcribe).await
}
