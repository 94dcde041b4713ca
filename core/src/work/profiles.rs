//! Which agent profile a call gets, from the store.

use crate::domain::phone::E164;
use crate::domain::profile::{AgentProfile, ProfileKey};

/// The profile for calls on `number`: its own, else the default one, else the built-in.
pub async fn resolve(
    store: &dyn crate::store::ProfilesPort,
    config: &crate::process::config::Config,
    number: Option<&E164>,
) -> crate::store::StoreResult<AgentProfile> {
    if let Some(number) = number {
        if let Some(profile) = store.profile(&ProfileKey::Number(number.clone())).await? {
            return Ok(profile);
        }
    }
    Ok(match store.profile(&ProfileKey::Default).await? {
        Some(profile) => profile,
        None => config.builtin_profile(),
    })
}
