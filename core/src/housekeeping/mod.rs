//! What keeps calls from being lost: the watchdog (calls whose stream went quiet are moved to a
//! new stream, then redirected to the fallback), the reconciler (recordings and calls Twilio has
//! that callkeeper missed), the next stream generation, and the fallback itself.

pub mod fallback;
pub mod reconciler;
pub mod reconnect;
pub mod watchdog;
