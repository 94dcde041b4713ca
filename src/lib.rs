//! The `callkeeper` command's library: the local server (`serve`), the simulator (`simulate`),
//! outbound calls (`call`), the CRM views (`calls`, `contacts`, `leads`), `doctor` and `twilio`, kept here so the end-to-end tests start exactly what users start.

pub mod agent_profiles;
pub mod calls;
pub mod contacts;
pub mod crm_users;
pub mod dlq;
pub mod doctor;
pub mod fake_business;
pub mod fake_realtime;
pub mod leads;
pub mod local_config;
pub mod media_client;
pub mod outbound;
pub mod server;
pub mod simulate;
pub mod twilio_numbers;
