//! Agent profiles as the relay reads them: from the store at a call's start, at most once per
//! [`PROFILE_TTL`] per number, so a business's edit reaches new calls within seconds without a
//! store read per call (never per frame). A store that fails is not the caller's problem: the
//! last profile read, else the built-in one, answers the call.

use callkeeper_core::call::Call;
use callkeeper_core::config::Config;
use callkeeper_core::phone::E164;
use callkeeper_core::profile::{self, AgentProfile};
use callkeeper_core::store::CallStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PROFILE_TTL: Duration = Duration::from_secs(5);

/// By business number (`None`: calls to a number that is not E.164): when read, and what.
type Cache = HashMap<Option<E164>, (Instant, Arc<AgentProfile>)>;

#[derive(Clone)]
pub struct Profiles {
    calls: Arc<dyn CallStore>,
    config: Arc<Config>,
    cached: Arc<Mutex<Cache>>,
}

impl Profiles {
    pub fn new(calls: Arc<dyn CallStore>, config: Arc<Config>) -> Profiles {
        Profiles { calls, config, cached: Arc::default() }
    }

    /// The profile for this call's business number.
    pub async fn for_call(&self, call: &Call) -> Arc<AgentProfile> {
        let number = profile::business_number(call);
        let stale = {
            let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            match cached.get(&number) {
                Some((at, profile)) if at.elapsed() < PROFILE_TTL => return profile.clone(),
                other => other.map(|(_, p)| p.clone()),
            }
        };
        match callkeeper_core::work::profiles::resolve(self.calls.as_ref(), &self.config, number.as_ref()).await {
            Ok(found) => {
                let found = Arc::new(found);
                self.cached.lock().unwrap_or_else(|p| p.into_inner()).insert(number, (Instant::now(), found.clone()));
                found
            }
            Err(e) => {
                tracing::warn!(call_sid = %call.call_sid, error = %e, "agent profile not read; using the last one known");
                stale.unwrap_or_else(|| Arc::new(self.config.builtin_profile()))
            }
        }
    }
}
