//! Many users' sessions in one process, each with its own [`MemoryManager`], isolated by user
//! (tenant) and session; with `tiers.dir` set, each session is saved after every change (or,
//! with write-behind, by [`Sessions::flush`]) and resumes after a restart, and long-term memory
//! (see [`crate::storage`]) is kept there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use llmem_core::{Error, Filter, MemoryStore, Result, Scope};
use tokio::sync::Mutex;

use crate::config::Config;
use crate::manager::{MemoryManager, Providers};
use crate::storage::open_store;

/// A handle on one session's manager; lock it for the duration of a turn.
pub type SessionHandle = Arc<Mutex<MemoryManager>>;

#[derive(Debug)]
struct Open {
    handle: SessionHandle,
    /// The tick of its last use, for closing the least recently used.
    used: u64,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<(String, String), Open>,
    tick: u64,
}

/// Sessions by (user, session), opened on first use; at most `server.max_open_sessions` stay
/// open, the least recently used idle ones beyond that are saved and closed (they resume from
/// disk on their next use).
#[derive(Debug)]
pub struct Sessions {
    config: Config,
    providers: Providers,
    dir: Option<PathBuf>,
    deferred: bool,
    table: parking_lot::Mutex<Table>,
}

/// A user or session name as a file name: letters, digits, `-` and `_` as they are, every other
/// byte as `%XX`, so that no name can reach outside the sessions directory.
pub(crate) fn file_name(s: &str) -> String {
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
            deferred: false,
            table: parking_lot::Mutex::new(Table::default()),
        })
    }

    /// Write-behind: sessions are saved by [`Sessions::flush`] (run it on a short timer and at
    /// shutdown), when they are closed, and when dropped, not on every change.
    pub fn with_write_behind(mut self) -> Self {
        self.deferred = true;
        self
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
        let mut table = self.table.lock();
        table.tick += 1;
        let tick = table.tick;
        if let Some(o) = table.open.get_mut(&key) {
            o.used = tick;
            return Ok(o.handle.clone());
        }
        self.close_idle(
            &mut table,
            self.config.server.max_open_sessions.saturating_sub(1),
        );
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
        if self.deferred {
            m = m.with_deferred_saves();
        }
        let h = Arc::new(Mutex::new(m));
        table.open.insert(
            key,
            Open {
                handle: h.clone(),
                used: tick,
            },
        );
        Ok(h)
    }

    /// Saves and closes the least recently used sessions nobody holds until at most `keep`
    /// are open. A session in use stays open, so the cap can be passed while all are busy.
    fn close_idle(&self, table: &mut Table, keep: usize) {
        if table.open.len() <= keep {
            return;
        }
        let mut idle: Vec<(u64, (String, String))> = table
            .open
            .iter()
            .filter(|(_, o)| Arc::strong_count(&o.handle) == 1)
            .map(|(k, o)| (o.used, k.clone()))
            .collect();
        idle.sort();
        for (_, key) in idle {
            if table.open.len() <= keep {
                break;
            }
            let Some(o) = table.open.get(&key) else {
                continue;
            };
            let Ok(mut m) = o.handle.try_lock() else {
                continue;
            };
            if let Err(e) = m.flush() {
                // Kept open, so that the change is not lost; the next flush tries again.
                tracing::error!(error = %e, "could not save a session to close it");
                continue;
            }
            drop(m);
            table.open.remove(&key);
        }
    }

    /// Saves every session with unsaved changes (write-behind). With `wait` (at shutdown),
    /// waits for sessions in use and then flushes the store ([`MemoryStore::flush`]: the reads
    /// counted since the tiers last wrote them); without, skips sessions in use until the next
    /// call. Returns how many
    /// sessions were written; the first error is returned after all others were tried.
    pub async fn flush(&self, wait: bool) -> Result<usize> {
        let handles: Vec<SessionHandle> = self
            .table
            .lock()
            .open
            .values()
            .map(|o| o.handle.clone())
            .collect();
        let mut written = 0;
        let mut first_error = None;
        for h in handles {
            let mut m = if wait {
                h.lock().await
            } else {
                match h.try_lock() {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            };
            if !m.is_dirty() {
                continue;
            }
            match m.flush() {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::error!(error = %e, "could not save a session");
                    first_error.get_or_insert(e);
                }
            }
        }
        // At shutdown, what the store keeps in RAM (the reads counted for promotion). Not on
        // every write-behind tick: the tiers batch those writes themselves (a warm log entry
        // per 1,024 reads, a cold merge per 1,024 records read), and a flush each tick would
        // make a cold version every interval under read load.
        if wait
            && let Some(store) = &self.providers.store
            && let Err(e) = store.flush().await
        {
            tracing::error!(error = %e, "could not flush the store");
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Forgets, for `user`, the long-term memories that pass `filter` in every tier, for good,
    /// with their earlier versions and the quotes of their text in the user's sessions (open
    /// ones and saved ones) and in other memories' lexical keys ([`crate::forget_user`]). With
    /// [`Filter::All`] every session of the user is cleared and its files deleted. Other users
    /// are not touched.
    pub async fn forget(&self, user: &str, filter: &Filter) -> Result<crate::Forgotten> {
        let store = self
            .providers
            .store
            .clone()
            .ok_or_else(|| Error::config("tiers", "the sessions have no store"))?;
        let plan = crate::forget::Plan::new(&*store, user, filter).await?;
        let open: Vec<SessionHandle> = self
            .table
            .lock()
            .open
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|(_, o)| o.handle.clone())
            .collect();
        let mut sessions = 0;
        for h in open {
            // Saved ones are counted below, as files, when everything goes.
            if h.lock().await.forget_here(&plan)? && !(plan.everything && self.dir.is_some()) {
                sessions += 1;
            }
        }
        if plan.everything {
            self.table.lock().open.retain(|(u, _), _| u != user);
        }
        if let Some(dir) = &self.dir {
            sessions += crate::forget::forget_in_saved_sessions(dir, user, plan.session_secrets())?;
        }
        plan.finish(&*store, sessions).await
    }

    /// Sessions open in this process.
    pub fn len(&self) -> usize {
        self.table.lock().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (user, session) of every open session.
    pub fn keys(&self) -> Vec<(String, String)> {
        let mut k: Vec<_> = self.table.lock().open.keys().cloned().collect();
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
