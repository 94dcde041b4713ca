//! What the test suites share beyond the storage contract: the vendors' own Python packages,
//! run from the test venv `scripts/test.sh` makes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `script` (a path from the repository's root) with the test venv's Python
/// (`CALLKEEPER_TEST_PYTHON`, which `scripts/test.sh` exports), `input` on its stdin. Blocks:
/// from an async test whose fakes must go on answering meanwhile, call it in `spawn_blocking`.
pub fn venv_python(script: &str, input: &str) -> Output {
    let python = std::env::var("CALLKEEPER_TEST_PYTHON")
        .expect("CALLKEEPER_TEST_PYTHON is not set: run the suite with ./scripts/test.sh, whose venv has twilio-python and openai");
    let mut child = Command::new(python)
        .arg(script)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("the script reads its input");
    child.wait_with_output().expect("the script ran")
}
