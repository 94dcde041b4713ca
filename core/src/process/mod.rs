//! What a running process needs: its configuration (with secrets from SSM), start-up, logging,
//! metrics, which build it is, and the HTTP pieces every server shares (health, stamping).

pub mod build_info;
pub mod config;
pub mod http;
pub mod metrics;
pub mod parameters;
pub mod startup;
pub mod telemetry;
