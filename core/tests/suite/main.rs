//! callkeeper-core's integration tests, one binary: the storage contract on both adapters (the
//! AWS one against moto_server), SQS's dead-letter move task, SSM parameters, Twilio's REST API
//! against a fake, TwiML documents, and the signature and μ-law tables from their references.

mod aws_contract;
mod embedded_contract;
mod mulaw_tables;
mod openai_requests_conformance;
mod signature_vectors;
mod sqs_move_task;
mod ssm_parameters;
mod twilio_rest;
mod twilio_rest_conformance;
mod twiml_documents;
