//! Many users' sessions in one process, each with its own [`MemoryManager`], isolated by user
//! (tenant) and session; with `tiers.dir` set, each session is saved after every change (or,
//! with write-behind, by [`Sessions::flush`]) and resumes after a restart, and long-term memory
//! (see [`crate::storage`]) is kept there.
//!
//! Replicas (`tiers.shared`, feature `lance`): each session is an object
//! `<user>/<session>.json` under `tiers.sessions_url`. [`Sessions::checkout`] brings the open
//! session up to date with its object (a conditional GET: unchanged costs no transfer) and
//! [`Sessions::commit`] writes it back with `If-Match` on the version it read (or
//! `If-None-Match: *` for a new one). When another replica wrote the session in between, the
//! write is refused; the newer copy is read, both changes are merged
//! ([`crate::SessionState::merge`]: no message is lost) and the write is tried again.

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

/// The session as its shared object was last read or written (replicas).
#[cfg(feature = "lance")]
#[derive(Debug, Default)]
struct Remote {
    version: Option<llmem_tiers::objects::Version>,
    /// The state at that version: the base of a merge.
    base: crate::manager::SessionState,
}

#[cfg(not(feature = "lance"))]
#[derive(Debug, Default)]
struct Remote;

/// Writes of a session retried on conflicts before [`Sessions::commit`] gives up.
#[cfg(feature = "lance")]
const COMMIT_ATTEMPTS: usize = 50;

#[derive(Debug)]
struct Open {
    handle: SessionHandle,
    /// The tick of its last use, for closing the least recently used.
    used: u64,
    remote: Arc<parking_lot::Mutex<Remote>>,
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
    /// Sessions as objects (`tiers.shared`).
    #[cfg(feature = "lance")]
    objects: Option<llmem_tiers::objects::Versioned>,
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
        #[cfg(feature = "lance")]
        let objects = match (&config.tiers.sessions_url, config.tiers.shared) {
            (Some(url), true) => Some(llmem_tiers::objects::Versioned::open(url, &[], "sessions")?),
            _ => None,
        };
        // Replicas keep no session on local disk.
        let dir = config
            .tiers
            .dir
            .as_ref()
            .filter(|_| !config.tiers.shared)
            .map(|d| d.join("sessions"));
        Ok(Sessions {
            config,
            providers,
            dir,
            deferred: false,
            table: parking_lot::Mutex::new(Table::default()),
            #[cfg(feature = "lance")]
            objects,
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

    /// The session `session` of `user`, resumed from disk or new. Replicas use
    /// [`Sessions::checkout`] and [`Sessions::commit`] around each change.
    pub fn get(&self, user: &str, session: &str) -> Result<SessionHandle> {
        self.open(user, session).map(|(h, _)| h)
    }

    fn open(
        &self,
        user: &str,
        session: &str,
    ) -> Result<(SessionHandle, Arc<parking_lot::Mutex<Remote>>)> {
        if user.is_empty() || session.is_empty() {
            return Err(Error::invalid("user and session names must not be empty"));
        }
        let key = (user.to_owned(), session.to_owned());
        let mut table = self.table.lock();
        table.tick += 1;
        let tick = table.tick;
        if let Some(o) = table.open.get_mut(&key) {
            o.used = tick;
            return Ok((o.handle.clone(), o.remote.clone()));
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
        let remote = Arc::new(parking_lot::Mutex::new(Remote::default()));
        table.open.insert(
            key,
            Open {
                handle: h.clone(),
                used: tick,
                remote: remote.clone(),
            },
        );
        Ok((h, remote))
    }

    /// The session locked for a change, brought up to date with its shared object first
    /// (replicas; elsewhere the same as locking [`Sessions::get`]'s handle). Call
    /// [`Sessions::commit`] before the change is acknowledged.
    pub async fn checkout(
        &self,
        user: &str,
        session: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<MemoryManager>> {
        let (h, _remote) = self.open(user, session)?;
        #[allow(unused_mut)]
        let mut m = h.lock_owned().await;
        #[cfg(feature = "lance")]
        if let Some(objs) = &self.objects {
            use llmem_tiers::objects::Fetched;
            let name = object_name(user, session);
            let known = _remote.lock().version.clone();
            match objs.get_if_changed(&name, known.as_ref()).await? {
                Fetched::Unchanged => {}
                Fetched::Changed(bytes, v) => {
                    let state = parse_state(&name, &bytes, user, session)?;
                    m.replace_state(state.clone());
                    *_remote.lock() = Remote {
                        version: Some(v),
                        base: state,
                    };
                }
                Fetched::Missing => {
                    // Never written, or deleted by a forget on another replica.
                    if known.is_some() {
                        m.replace_state(empty_state(user, session));
                    }
                    *_remote.lock() = Remote {
                        version: None,
                        base: m.state().clone(),
                    };
                }
            }
        }
        Ok(m)
    }

    /// Writes a session changed since [`Sessions::checkout`] to its shared object (replicas;
    /// elsewhere nothing: the manager saves itself). Another replica's write in between is
    /// merged in ([`crate::SessionState::merge`]) and the write tried again; after 50
    /// conflicts in a row the error says so, and the change stays in this replica's copy for
    /// the next commit.
    pub async fn commit(&self, m: &mut MemoryManager) -> Result<()> {
        #[cfg(feature = "lance")]
        if let Some(objs) = &self.objects {
            use llmem_tiers::objects::Written;
            let user = m.scope().tenant.clone();
            let session = m.scope().session.clone().unwrap_or_default();
            let (_, remote) = self.open(&user, &session)?;
            let name = object_name(&user, &session);
            for attempt in 0..COMMIT_ATTEMPTS {
                let bytes =
                    serde_json::to_vec(m.state()).map_err(|e| Error::serde("session state", e))?;
                let expected = remote.lock().version.clone();
                match objs.put_if(&name, bytes, expected.as_ref()).await? {
                    Written::Done(v) => {
                        *remote.lock() = Remote {
                            version: Some(v),
                            base: m.state().clone(),
                        };
                        return Ok(());
                    }
                    Written::Conflict => {
                        let base = std::mem::take(&mut remote.lock().base);
                        let (theirs, version) = match objs.get(&name).await? {
                            Some((bytes, v)) => {
                                (parse_state(&name, &bytes, &user, &session)?, Some(v))
                            }
                            None => (empty_state(&user, &session), None),
                        };
                        let merged = crate::manager::SessionState::merge(&base, m.state(), &theirs);
                        m.replace_state(merged);
                        *remote.lock() = Remote {
                            version,
                            base: theirs,
                        };
                        tracing::debug!(attempt, session = %name, "session written elsewhere meanwhile: merged");
                        // A short, growing pause: a conflict storm on one session must not
                        // spin.
                        tokio::time::sleep(std::time::Duration::from_millis(
                            (attempt as u64 * 5).min(200),
                        ))
                        .await;
                    }
                }
            }
            return Err(Error::storage(
                "sessions",
                format!(
                    "session {name}: {COMMIT_ATTEMPTS} writes in a row lost to other replicas' \
                     writes of the same session; the change is kept here and goes with the \
                     next write"
                ),
            ));
        }
        let _ = m;
        Ok(())
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
        #[cfg(feature = "lance")]
        if let Some(objs) = &self.objects {
            sessions += forget_in_shared_sessions(objs, user, plan.session_secrets()).await?;
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

/// The object of a shared session: `<user>/<session>.json`, both names escaped.
#[cfg(feature = "lance")]
fn object_name(user: &str, session: &str) -> String {
    format!("{}/{}.json", file_name(user), file_name(session))
}

#[cfg(feature = "lance")]
fn empty_state(user: &str, session: &str) -> crate::manager::SessionState {
    crate::manager::SessionState {
        tenant: user.to_owned(),
        session: Some(session.to_owned()),
        ..Default::default()
    }
}

/// A shared session object, checked to be the session it is named for.
#[cfg(feature = "lance")]
fn parse_state(
    name: &str,
    bytes: &[u8],
    user: &str,
    session: &str,
) -> Result<crate::manager::SessionState> {
    let state: crate::manager::SessionState = serde_json::from_slice(bytes)
        .map_err(|e| Error::serde(format!("shared session {name}"), e))?;
    if state.tenant != user || state.session.as_deref() != Some(session) {
        return Err(Error::invalid(format!(
            "shared session {name} belongs to another session ({}/{:?})",
            state.tenant, state.session
        )));
    }
    Ok(state)
}

/// Scrubs (or, with `secrets` = `None`, deletes) the shared sessions of `user`, each with a
/// conditional write (a session written meanwhile is read and scrubbed again).
#[cfg(feature = "lance")]
async fn forget_in_shared_sessions(
    objs: &llmem_tiers::objects::Versioned,
    user: &str,
    secrets: Option<&[String]>,
) -> Result<usize> {
    use llmem_tiers::objects::Written;
    let mut n = 0;
    for name in objs.list(&file_name(user)).await? {
        let Some(secrets) = secrets else {
            objs.delete(&name).await?;
            n += 1;
            continue;
        };
        for _ in 0..COMMIT_ATTEMPTS {
            let Some((bytes, v)) = objs.get(&name).await? else {
                break;
            };
            let mut state: crate::manager::SessionState = serde_json::from_slice(&bytes)
                .map_err(|e| Error::serde(format!("shared session {name}"), e))?;
            if !crate::forget::scrub(&mut state, secrets) {
                break;
            }
            let bytes = serde_json::to_vec(&state).map_err(|e| Error::serde("session state", e))?;
            if let Written::Done(_) = objs.put_if(&name, bytes, Some(&v)).await? {
                n += 1;
                break;
            }
        }
    }
    Ok(n)
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
