//! What keeps calls from being lost: the watchdog (calls whose stream went quiet are redirected
//! to the fallback), the reconciler (recordings and calls Twilio has that callkeeper missed), and
//! the fallback itself.

pub mod fallback;
pub mod reconciler;
pub mod watchdog;
