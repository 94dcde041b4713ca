//! Agent profiles as the relay reads them: from the store at a call's start, at most once per
//! [`PROFILE_TTL`] per number, so a business's edit reaches new calls within seconds without a
//! store read per call (never per frame). A store that fails is not the caller's problem: the
//! last profile read, else the built-in one, answers the call.
//!
//! A profile with `[hours]` is read as it stands when the call starts: after hours, its
//! after-hours agent (a call the webhook sent to voicemail never reaches the relay).

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
    indexes: crate::knowledge::KnowledgeIndexes,
}

impl Profiles {
    pub fn new(calls: Arc<dyn CallStore>, config: Arc<Config>) -> Profiles {
        Profiles { calls, config, cached: Arc::default(), indexes: Default::default() }
    }

    /// The profile for this call's business number, as it stands now (its hours applied).
    pub async fn for_call(&self, call: &Call) -> Arc<AgentProfile> {
        let profile = self.stored_for(call).await;
        match profile.at_time(callkeeper_core::time::now_ms()) {
            std::borrow::Cow::Borrowed(_) => profile,
            std::borrow::Cow::Owned(after_hours) => Arc::new(after_hours),
        }
    }

    /// The search index of a profile's knowledge, when it is large enough to be searched.
    pub fn knowledge(&self, files: &[callkeeper_core::knowledge::KnowledgeFile]) -> Option<Arc<crate::knowledge::KnowledgeIndex>> {
        self.indexes.for_files(files)
    }

    async fn stored_for(&self, call: &Call) -> Arc<AgentProfile> {
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
