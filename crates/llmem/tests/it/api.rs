//! The public surface of `llmem` is chosen, not grown by accident: its modules are private, and
//! what applications use is re-exported from the crate root. Adding a name here is a decision
//! (document it in `lib.rs`); this test fails until the list says so.

/// What `llmem` exports from its root, as written in `src/lib.rs` (the `internals` feature
/// aside).
const ROOT: &[&str] = &[
    // the parts
    "compress",
    "core",
    "providers",
    "tiers",
    "tokens",
    "window",
    // modules of its own
    "when",
    // configuration
    "Config",
    "FactMode",
    "MemorySettings",
    "RetrievalScope",
    "RetrievalSettings",
    "ServerSettings",
    "SummarizerMode",
    "TierSettings",
    "TokenSettings",
    "BudgetSettings",
    "BudgetScope",
    "Plugins",
    "local_embedder",
    // the core types applications hold
    "Error",
    "MemoryRecord",
    "Message",
    "Result",
    "Role",
    "Usage",
    "Block",
    "Load",
    // the product
    "MemoryManager",
    "Prepared",
    "Providers",
    "Budgets",
    "Recalled",
    "SessionState",
    "Stats",
    "Sessions",
    "SessionHandle",
    "Memory",
    "BlockScope",
    "Loaded",
    "open_store",
    "open_tiered",
    // the model of a data directory's vectors, and changing it
    "EMBEDDER_FILE",
    "VectorModel",
    "Reembedded",
    "reembed",
    // forgetting and updating
    "Forgotten",
    "UPDATED_AT",
    "UPDATED_BY",
    "forget_user",
    "update_memory",
    // consolidation
    "Consolidated",
    "ConsolidationSettings",
    "ConsolidationWindow",
    "SOURCES",
    "WINDOW",
    "consolidate",
    "consolidation_users",
    // embedding off the request path
    "ATTEMPTS",
    "DeferredSettings",
    "DeferredStats",
    "DeferredStore",
];

/// The public items of `llmem::when`.
const WHEN: &[&str] = &["CivilDate", "resolve_times", "with_times"];

fn src(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names `pub use` and `pub mod` declare at the top level of `text`, outside the
/// `internals` module.
fn exported(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut statement = String::new();
    let mut depth = 0usize;
    for line in text.lines() {
        let t = line.trim();
        if depth > 0 {
            depth += t.matches('{').count();
            depth -= t.matches('}').count().min(depth);
            continue;
        }
        if t.starts_with("pub mod internals") {
            depth = t.matches('{').count();
            continue;
        }
        if statement.is_empty() && !(t.starts_with("pub use ") || t.starts_with("pub mod ")) {
            continue;
        }
        statement.push_str(t);
        statement.push(' ');
        if !t.ends_with(';') {
            continue;
        }
        let s = std::mem::take(&mut statement);
        let s = s.trim().trim_end_matches(';');
        if let Some(m) = s.strip_prefix("pub mod ") {
            names.push(m.trim().to_owned());
        } else if let Some(u) = s.strip_prefix("pub use ") {
            if let Some((_, alias)) = u.split_once(" as ") {
                names.push(alias.trim().to_owned());
            } else if let Some((_, list)) = u.split_once('{') {
                for n in list.trim_end_matches('}').split(',') {
                    let n = n.trim();
                    if !n.is_empty() {
                        names.push(n.rsplit("::").next().unwrap_or(n).to_owned());
                    }
                }
            } else {
                names.push(u.rsplit("::").next().unwrap_or(u).trim().to_owned());
            }
        }
    }
    names
}

#[test]
fn the_root_exports_the_chosen_surface_and_nothing_else() {
    let lib = src("lib.rs");
    let mut got = exported(&lib);
    got.sort();
    let mut want: Vec<String> = ROOT.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(
        got, want,
        "llmem's root exports changed: update ROOT in tests/it/api.rs (and the docs of lib.rs) \
         if this is on purpose"
    );
    // Every other module is private.
    for line in lib.lines() {
        let t = line.trim();
        if let Some(m) = t.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';').trim_end_matches('{').trim();
            assert!(
                m == "when" || m == "internals",
                "`pub mod {m}`: keep modules private and re-export what applications need"
            );
        }
    }
    // The internals are behind their feature and hidden from the docs.
    let at = lib.find("pub mod internals").unwrap();
    let before = &lib[..at];
    assert!(
        before.trim_end().ends_with("#[doc(hidden)]")
            && before.contains("#[cfg(feature = \"internals\")]"),
        "internals must be #[cfg(feature = \"internals\")] #[doc(hidden)]"
    );
}

#[test]
fn when_exports_dates_and_relative_times_only() {
    let text = src("when.rs");
    let mut got: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let rest = l
                .strip_prefix("pub fn ")
                .or_else(|| l.strip_prefix("pub struct "))
                .or_else(|| l.strip_prefix("pub enum "))
                .or_else(|| l.strip_prefix("pub const "))
                .or_else(|| l.strip_prefix("pub use "))?;
            Some(
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, WHEN, "llmem::when's public items changed");
    // The root's names resolve (a compile-time check of the list's spelling).
    let _: fn(&str, llmem::core::Timestamp) -> String = llmem::when::with_times;
    let _ = llmem::when::CivilDate::from_days(0).long();
}

/// The first API's names still compile, as deprecated aliases of the current ones.
#[tokio::test]
#[allow(deprecated)]
async fn the_get_prefixed_names_are_deprecated_aliases() {
    let mut m =
        llmem::MemoryManager::new(llmem::Config::default(), llmem::Providers::default()).unwrap();
    m.add_message(llmem::Message::user("hello"), None)
        .await
        .unwrap();
    let a = m.get_context_for_llm().await.unwrap();
    let b = m.context_for_llm().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(m.get_stats(), m.stats());
}
