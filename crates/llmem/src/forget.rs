//! Updating and forgetting long-term memories, for every way in: [`MemoryManager`],
//! [`Sessions`](crate::Sessions), [`Memory`](crate::Memory), the CLI and the server.
//!
//! - **Update** keeps history. The memory keeps its id (so references to it stay good) and
//!   takes the new text; its previous version is copied to a new record that it `supersedes`
//!   (the copy's `superseded_by` is the memory), with the old text, metadata and creation time:
//!   who said what, when. Searches skip superseded versions; `get` by id still finds them.
//! - **Forget** removes for good. It takes the records the filter matches in the user's scope
//!   with every version linked to them by `supersedes`/`superseded_by`, and what was derived
//!   from them (a consolidation summary listing one as a source, a memory whose whole text
//!   one of them quotes or that quotes one: a fact and the message it was drawn from). It
//!   scrubs the sessions that hold their text (or deletes them all, when the filter is `{}`),
//!   removes the quotes of their text from other memories' lexical keys (a memory's key holds
//!   its neighbouring messages), and then asks the store to [`forget`](MemoryStore::forget)
//!   the records: every tier rewrites what still holds them (see docs/forget.md).
//!
//! The order is chosen for crashes: sessions are scrubbed before the memories are forgotten,
//! so a forget interrupted at any point leaves the memories findable by the same filter, and
//! running it again completes it. Nothing else of the user's is touched.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use llmem_core::{
    Embedder, Error, Filter, KEYWORDS, MemoryRecord, MemoryStore, Result, Scope, Timestamp, new_id,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::longterm::TIMES;
use crate::manager::SessionState;

/// The metadata key of a memory's last update time (RFC 3339).
pub const UPDATED_AT: &str = "updated_at";
/// The metadata key naming who made the last update (when the caller says).
pub const UPDATED_BY: &str = "updated_by";

/// What a forget removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// Long-term memories removed from every tier, earlier versions included.
    pub memories: usize,
    /// Other memories whose lexical keys quoted a forgotten text, rewritten without it.
    pub rewritten: usize,
    /// Saved sessions deleted (a forget of everything) or scrubbed of a forgotten text.
    pub sessions: usize,
}

/// The records of `user` that `filter` matches, with every version linked to them.
async fn matched(
    store: &dyn MemoryStore,
    scope: &Scope,
    filter: &Filter,
) -> Result<Vec<MemoryRecord>> {
    let mut out = store.query(scope, filter, None).await?;
    let mut seen: HashSet<String> = out.iter().map(|r| r.id.clone()).collect();
    let mut frontier: Vec<String> = out
        .iter()
        .flat_map(|r| r.supersedes.iter().chain(r.superseded_by.iter()).cloned())
        .filter(|id| !seen.contains(id))
        .collect();
    while !frontier.is_empty() {
        let found = store.get(scope, &frontier).await?;
        frontier.clear();
        for r in found {
            if !seen.insert(r.id.clone()) {
                continue;
            }
            for id in r.supersedes.iter().chain(r.superseded_by.iter()) {
                if !seen.contains(id) {
                    frontier.push(id.clone());
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// The texts a forgotten record leaves in other places: its own text and, for a conversation
/// memory (`who: text`), the message text, which neighbours' keys and sessions quote.
fn secrets_of(records: &[MemoryRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        let t = r.text.trim();
        if t.is_empty() {
            continue;
        }
        out.push(t.to_owned());
        if let Some((_, said)) = t.split_once(": ")
            && !said.trim().is_empty()
        {
            out.push(said.trim().to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `text` quotes one of `secrets`. A secret of fewer than 8 characters counts only as
/// a whole line, so that forgetting "ok" does not empty every text with those two letters.
fn quotes(text: &str, secrets: &[String]) -> bool {
    secrets.iter().any(|s| {
        if s.chars().count() >= 8 {
            text.contains(s.as_str())
        } else {
            text.lines().any(|l| l.trim() == s)
        }
    })
}

/// Whether a message's text quotes one of `secrets`, or is itself quoted whole by one (a
/// memory made of the message, `who: text`).
pub(crate) fn quoted(text: &str, secrets: &[String]) -> bool {
    let t = text.trim();
    quotes(t, secrets) || (t.chars().count() >= 8 && secrets.iter().any(|s| s.contains(t)))
}

/// Whether a memory of `text` holds one of `secrets` or is held whole by one, counting only
/// texts of four words or more, so that forgetting "thank you so" takes no other memory.
fn derived_from(text: &str, secrets: &[String]) -> bool {
    let words = |t: &str| t.split_whitespace().count();
    let t = text.trim();
    secrets
        .iter()
        .any(|s| (words(s) >= 4 && t.contains(s.as_str())) || (words(t) >= 4 && s.contains(t)))
}

/// `text` without the quotes of `secrets` (the lines that quote one go).
fn without(text: &str, secrets: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if !quotes(line, secrets) {
            out.push(line.to_owned());
        }
    }
    let mut t = out.join("\n");
    // A quote spanning lines (a message with line breaks) is cut out where it stands.
    for s in secrets.iter().filter(|s| s.chars().count() >= 8) {
        t = t.replace(s.as_str(), "");
    }
    t
}

/// Removes from a session what quotes `secrets`: the messages (of the context) and the
/// sentences of the rolling summary. Returns whether anything went.
pub(crate) fn scrub(state: &mut SessionState, secrets: &[String]) -> bool {
    if secrets.is_empty() {
        return false;
    }
    let before = state.context.len();
    state.context.retain(|m| !quoted(&m.text(), secrets));
    let mut changed = state.context.len() != before;
    if let Some(summary) = &state.summary
        && quotes(summary, secrets)
    {
        let kept: Vec<&str> = summary
            .split_inclusive(['.', '!', '?', '\n'])
            .filter(|s| !quotes(s, secrets))
            .collect();
        let kept = without(&kept.concat(), secrets).trim().to_owned();
        state.summary = (!kept.is_empty()).then_some(kept);
        changed = true;
    }
    changed
}

/// The directory of `user`'s saved sessions under `sessions_dir`.
pub(crate) fn user_dir(sessions_dir: &Path, user: &str) -> std::path::PathBuf {
    sessions_dir.join(crate::sessions::file_name(user))
}

/// Scrubs (or, with `secrets` = `None`, deletes) the sessions of `user` saved under
/// `sessions_dir`; returns how many changed.
pub(crate) fn forget_in_saved_sessions(
    sessions_dir: &Path,
    user: &str,
    secrets: Option<&[String]>,
) -> Result<usize> {
    let dir = user_dir(sessions_dir, user);
    if !dir.exists() {
        return Ok(0);
    }
    let entries =
        std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut files = Vec::new();
    for e in entries {
        let p = e
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .path();
        if p.extension().is_some_and(|x| x == "json") {
            files.push(p);
        }
    }
    let Some(secrets) = secrets else {
        let n = files.len();
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        crate::manager::sync_dir(sessions_dir);
        return Ok(n);
    };
    let mut n = 0;
    for p in files {
        let mut state = SessionState::read(&p)?;
        if scrub(&mut state, secrets) {
            state.write_to(&p, true)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Forgets, for `user`, the memories that pass `filter` (see the module docs), and scrubs the
/// sessions saved under `sessions_dir` (when given) of their text; with [`Filter::All`] the
/// user's saved sessions are deleted. A filter that matches nothing forgets nothing and is
/// not an error.
pub async fn forget_user(
    store: &dyn MemoryStore,
    sessions_dir: Option<&Path>,
    user: &str,
    filter: &Filter,
) -> Result<Forgotten> {
    let plan = Plan::new(store, user, filter).await?;
    let sessions = match sessions_dir {
        Some(dir) => forget_in_saved_sessions(dir, user, plan.session_secrets())?,
        None => 0,
    };
    plan.finish(store, sessions).await
}

/// A forget worked out before anything is written: what goes, and the texts it leaves in
/// sessions. Each way in scrubs its own sessions with it, then calls [`Plan::finish`].
pub(crate) struct Plan {
    scope: Scope,
    records: Vec<MemoryRecord>,
    /// The texts the forgotten records leave elsewhere (sessions, other memories' keys).
    pub(crate) secrets: Vec<String>,
    /// The filter is `{}`: everything of the user goes, sessions included.
    pub(crate) everything: bool,
}

impl Plan {
    pub(crate) async fn new(store: &dyn MemoryStore, user: &str, filter: &Filter) -> Result<Plan> {
        if user.trim().is_empty() {
            return Err(Error::invalid(
                "forget needs a user: name whose memories to forget",
            ));
        }
        let scope = Scope::tenant(user);
        let records = matched(store, &scope, filter).await?;
        let secrets = secrets_of(&records);
        Ok(Plan {
            scope,
            records,
            secrets,
            everything: matches!(filter, Filter::All),
        })
    }

    /// What saved sessions lose: the secrets, or (`None`) everything.
    pub(crate) fn session_secrets(&self) -> Option<&[String]> {
        (!self.everything).then_some(&self.secrets[..])
    }

    /// Rewrites the neighbours' keys, then forgets the records in the store; `sessions` is
    /// how many sessions the caller scrubbed or deleted.
    pub(crate) async fn finish(
        self,
        store: &dyn MemoryStore,
        sessions: usize,
    ) -> Result<Forgotten> {
        let mut out = Forgotten {
            sessions,
            ..Forgotten::default()
        };
        let Plan {
            scope,
            records,
            secrets,
            everything,
        } = self;
        if everything {
            out.memories = store.forget(&scope, &Filter::All).await?;
            return Ok(out);
        }
        if records.is_empty() {
            return Ok(out);
        }
        let (rewritten, ids) = unlink(store, &scope, &records, &secrets).await?;
        out.rewritten = rewritten;
        let filter = Filter::parse(&serde_json::json!({ "id": { "$in": ids } }))?;
        out.memories = store.forget(&scope, &filter).await?;
        Ok(out)
    }
}

/// Finds what derives from `records` and rewrites the other memories' keys without the
/// quotes of `secrets`; returns how many were rewritten and every id to forget.
async fn unlink(
    store: &dyn MemoryStore,
    scope: &Scope,
    records: &[MemoryRecord],
    secrets: &[String],
) -> Result<(usize, Vec<String>)> {
    let mut ids: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let others: Vec<MemoryRecord> = store
        .query(scope, &Filter::All, None)
        .await?
        .into_iter()
        .filter(|r| !ids.contains(&r.id))
        .collect();
    // What was derived from a forgotten memory goes with it: a consolidation summary of it,
    // and a memory whose whole text one of them quotes or that quotes one of them (a fact
    // drawn from a forgotten message, the message a forgotten fact was drawn from).
    let derived: Vec<String> = others
        .iter()
        .filter(|r| {
            crate::consolidate::sources(r).any(|id| ids.contains(id))
                || derived_from(&r.text, secrets)
        })
        .map(|r| r.id.clone())
        .collect();
    ids.extend(derived);
    let mut rewritten = Vec::new();
    for mut r in others {
        if ids.contains(&r.id) {
            continue;
        }
        let mut changed = false;
        for key in [KEYWORDS, TIMES] {
            if let Some(Value::String(k)) = r.metadata.get(key)
                && quotes(k, secrets)
            {
                let k = without(k, secrets);
                r.metadata.insert(key.into(), Value::String(k));
                changed = true;
            }
        }
        if changed {
            rewritten.push(r);
        }
    }
    let n = rewritten.len();
    if !rewritten.is_empty() {
        store.put(rewritten).await?;
    }
    Ok((n, ids.into_iter().collect()))
}

/// Replaces the text of `user`'s memory `id`, keeping history (see the module docs): the
/// memory keeps its id and creation time, a new record holds the previous version. `metadata`,
/// when given, replaces the memory's metadata; `by` is recorded as [`UPDATED_BY`]. The text is
/// embedded again when an embedder is given. Returns the memory as stored.
pub async fn update_memory(
    store: &Arc<dyn MemoryStore>,
    embedder: Option<&Arc<dyn Embedder>>,
    user: &str,
    id: &str,
    text: &str,
    metadata: Option<Map<String, Value>>,
    by: Option<&str>,
) -> Result<MemoryRecord> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid(
            "the new text is empty: give the memory's new text",
        ));
    }
    let scope = Scope::tenant(user);
    let mut current = store
        .get(&scope, &[id.to_owned()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound {
            what: format!(
                "memory `{id}` of user `{user}` (search or list the user's memories for its id)"
            ),
        })?;
    if let Some(newer) = &current.superseded_by {
        return Err(Error::invalid(format!(
            "memory `{id}` is an earlier version, replaced by `{newer}`: update `{newer}`"
        )));
    }
    let mut previous = current.clone();
    previous.id = new_id();
    previous.superseded_by = Some(current.id.clone());
    current.supersedes = Some(previous.id.clone());
    current.text = text.to_owned();
    if let Some(m) = metadata {
        current.metadata = m;
    }
    current.metadata.remove(TIMES);
    current.metadata.insert(
        UPDATED_AT.into(),
        Value::String(Timestamp::now().to_rfc3339()),
    );
    match by {
        Some(b) => {
            current.metadata.insert(UPDATED_BY.into(), b.into());
        }
        None => {
            current.metadata.remove(UPDATED_BY);
        }
    }
    current.embedding = match embedder {
        Some(e) => e.embed(std::slice::from_ref(&current.text)).await?.pop(),
        None => None,
    };
    // The previous version first: if the process dies between the two writes, the memory
    // still holds its old text and a copy of it is marked earlier (nothing lost).
    store.put(vec![previous]).await?;
    store.put(vec![current.clone()]).await?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmem_core::Message;

    #[test]
    fn scrub_drops_quoting_messages_and_summary_sentences() {
        let mut s = SessionState {
            context: vec![
                Message::user("my card number is 4111 2222 3333 4444"),
                Message::assistant("Noted."),
                Message::user("what's the weather?"),
            ],
            summary: Some("The user likes tea. my card number is 4111 2222 3333 4444. Bye.".into()),
            ..SessionState::default()
        };
        let secrets = vec![
            "user: my card number is 4111 2222 3333 4444".to_owned(),
            "my card number is 4111 2222 3333 4444".to_owned(),
        ];
        assert!(scrub(&mut s, &secrets));
        assert_eq!(s.context.len(), 2);
        let summary = s.summary.unwrap_or_default();
        assert!(!summary.contains("4111"), "{summary}");
        assert!(summary.contains("likes tea"), "{summary}");
    }

    #[test]
    fn derived_memories_need_four_words_in_common() {
        let secrets = vec![
            "alice: my passport is X77 and it expires soon".to_owned(),
            "thanks a lot".to_owned(),
        ];
        assert!(derived_from("my passport is X77", &secrets));
        assert!(!derived_from("passport", &secrets));
        assert!(!derived_from("bob: thanks a lot, see you", &secrets));
    }

    #[test]
    fn short_secrets_only_match_whole_lines() {
        let secrets = vec!["ok".to_owned()];
        assert!(!quotes("look, a book", &secrets));
        assert!(quotes("hello\nok\nbye", &secrets));
        assert_eq!(without("hello\nok\nbye", &secrets), "hello\nbye");
    }
}
