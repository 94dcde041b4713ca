//! Every path callkeeper serves, defined once: the webhooks Twilio posts to, the media stream it
//! opens, the CRM's pages and the health checks. The template's routes, the TwiML's callback
//! URLs, the relay and the CRM all take them from here.

/// The webhooks, one per path. A Lambda function serves the routes its template gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    IncomingCall,
    OutboundCall,
    StreamStatus,
    StreamEnded,
    RecordingDone,
    WhatsappInbound,
    WhatsappStatus,
}

impl Route {
    pub const ALL: [Route; 7] = [
        Route::IncomingCall,
        Route::OutboundCall,
        Route::StreamStatus,
        Route::StreamEnded,
        Route::RecordingDone,
        Route::WhatsappInbound,
        Route::WhatsappStatus,
    ];

    pub const fn path(self) -> &'static str {
        match self {
            Route::IncomingCall => "/webhook/incoming_call",
            Route::OutboundCall => "/webhook/outbound_call",
            Route::StreamStatus => "/webhook/stream_status",
            Route::StreamEnded => "/webhook/stream_ended",
            Route::RecordingDone => "/webhook/recording_done",
            Route::WhatsappInbound => "/webhook/whatsapp/inbound",
            Route::WhatsappStatus => "/webhook/whatsapp/status",
        }
    }
}

/// The media stream's WebSocket, on the relay (`<Connect><Stream url>`).
pub const STREAM_PATH: &str = "/ws/twilio-media";

/// The CRM's pages are all under this.
pub const CRM_BASE: &str = "/crm";
/// Where a recording's or a message's media's signed link points on the embedded store.
pub const CRM_BLOB_PATH: &str = "/crm/blob";

/// The process answers.
pub const HEALTHZ: &str = "/healthz";
/// The process and its store answer (the relay: and it is not draining).
pub const READYZ: &str = "/readyz";
/// Which build this is.
pub const VERSION: &str = "/version";
