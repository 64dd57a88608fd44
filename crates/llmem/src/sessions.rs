//! Many users' sessions in one process, each with its own [`MemoryManager`], isolated by user
//! (tenant) and session; with `tiers.dir` set, each session is saved after every change and
//! resumes after a restart, and long-term memory (see [`crate::storage`]) is kept there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use llmem_core::{Error, Result, Scope};
use tokio::sync::Mutex;

use crate::config::Config;
use crate::manager::{MemoryManager, Providers};
use crate::storage::open_store;

/// A handle on one session's manager; lock it for the duration of a turn.
pub type SessionHandle = Arc<Mutex<MemoryManager>>;

/// Sessions by (user, session), opened on first use.
#[derive(Debug)]
pub struct Sessions {
    config: Config,
    providers: Providers,
    dir: Option<PathBuf>,
    open: parking_lot::Mutex<HashMap<(String, String), SessionHandle>>,
}

/// A user or session name as a file name: letters, digits, `-` and `_` as they are, every other
/// byte as `%XX`, so that no name can reach outside the sessions directory.
fn file_name(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Sessions {
    /// Sessions sharing `providers` (one store, one embedder, one chat model, one counter); the
    /// store and the counter are made from the config when not given.
    pub fn new(config: Config, mut providers: Providers) -> Result<Self> {
        config.validate()?;
        if providers.store.is_none() {
            providers.store = Some(open_store(&config.tiers)?);
        }
        // One counter (and one memo of message counts) for every session.
        if providers.counter.is_none() {
            providers.counter = Some(
                crate::manager::model_counter(
                    &config.memory.model,
                    config.tokens.catalog.as_deref(),
                )?
                .0,
            );
        }
        let dir = config.tiers.dir.as_ref().map(|d| d.join("sessions"));
        Ok(Sessions {
            config,
            providers,
            dir,
            open: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// The session `session` of `user`, resumed from disk or new.
    pub fn get(&self, user: &str, session: &str) -> Result<SessionHandle> {
        if user.is_empty() || session.is_empty() {
            return Err(Error::invalid("user and session names must not be empty"));
        }
        let key = (user.to_owned(), session.to_owned());
        let mut open = self.open.lock();
        if let Some(h) = open.get(&key) {
            return Ok(h.clone());
        }
        let mut m = MemoryManager::for_session(
            self.config.clone(),
            self.providers.clone(),
            Scope::session(user, session),
        )?;
        if let Some(dir) = &self.dir {
            m = m.persist_to(
                dir.join(file_name(user))
                    .join(format!("{}.json", file_name(session))),
            )?;
        }
        let h = Arc::new(Mutex::new(m));
        open.insert(key, h.clone());
        Ok(h)
    }

    /// Sessions open in this process.
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (user, session) of every open session.
    pub fn keys(&self) -> Vec<(String, String)> {
        let mut k: Vec<_> = self.open.lock().keys().cloned().collect();
        k.sort();
        k
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(file_name("alice"), "alice");
        assert_eq!(file_name("../etc"), "%2E%2E%2Fetc");
        assert_eq!(file_name("a b"), "a%20b");
    }
}
