//! Registries of named plugin factories, built from TOML tables.
//!
//! ```toml
//! [providers.fast]
//! kind = "openai"
//! model = "gpt-4o-mini"
//! ```
//!
//! The host registers the built-in factories (one line per cargo feature) and any third-party
//! plugin explicitly, then builds instances from config; the table's `kind` picks the factory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Error, Result};

/// Builds one plugin instance from its TOML table.
pub type Factory<T> = Box<dyn Fn(&toml::Table) -> Result<Arc<T>> + Send + Sync>;

/// Named factories of one plugin type (`dyn ChatModel`, `dyn MemoryStore`, …).
pub struct Registry<T: ?Sized> {
    what: &'static str,
    factories: BTreeMap<String, Factory<T>>,
    /// Names known to this build whose cargo feature is off, with that feature.
    disabled: BTreeMap<String, String>,
}

impl<T: ?Sized> std::fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("what", &self.what)
            .field("factories", &self.factories.keys().collect::<Vec<_>>())
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl<T: ?Sized> Registry<T> {
    /// An empty registry; `what` names the plugin type in errors (`provider`, `store`).
    pub fn new(what: &'static str) -> Self {
        Registry {
            what,
            factories: BTreeMap::new(),
            disabled: BTreeMap::new(),
        }
    }

    /// Registers (or replaces) the factory for `kind`.
    pub fn register(
        &mut self,
        kind: impl Into<String>,
        factory: impl Fn(&toml::Table) -> Result<Arc<T>> + Send + Sync + 'static,
    ) -> &mut Self {
        let kind = kind.into();
        self.disabled.remove(&kind);
        self.factories.insert(kind, Box::new(factory));
        self
    }

    /// Records that `kind` exists but needs cargo feature `feature`, so building it says so.
    pub fn register_disabled(
        &mut self,
        kind: impl Into<String>,
        feature: impl Into<String>,
    ) -> &mut Self {
        let kind = kind.into();
        if !self.factories.contains_key(&kind) {
            self.disabled.insert(kind, feature.into());
        }
        self
    }

    /// The kinds that can be built.
    pub fn kinds(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.factories.contains_key(kind)
    }

    /// Builds from a table whose `kind` key names the factory.
    pub fn build(&self, table: &toml::Table) -> Result<Arc<T>> {
        let kind = table
            .get("kind")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| {
                Error::config(
                    "kind",
                    format!(
                        "each {} table needs `kind = \"…\"`; known kinds: {}",
                        self.what,
                        self.kinds().join(", ")
                    ),
                )
            })?;
        self.build_kind(kind, table)
    }

    /// Builds `kind` from `table`.
    pub fn build_kind(&self, kind: &str, table: &toml::Table) -> Result<Arc<T>> {
        if let Some(f) = self.factories.get(kind) {
            return f(table);
        }
        if let Some(feature) = self.disabled.get(kind) {
            return Err(Error::FeatureDisabled {
                kind: self.what.to_owned(),
                name: kind.to_owned(),
                feature: feature.clone(),
            });
        }
        Err(Error::UnknownPlugin {
            kind: self.what.to_owned(),
            name: kind.to_owned(),
            known: self.kinds().join(", "),
        })
    }

    /// Builds every `[section.<name>]` table of a config section, keyed by name.
    pub fn build_all(&self, section: &toml::Table) -> Result<BTreeMap<String, Arc<T>>> {
        let mut out = BTreeMap::new();
        for (name, v) in section {
            let table = v.as_table().ok_or_else(|| {
                Error::config(
                    name.clone(),
                    format!("must be a table like [{}.{name}] with a `kind`", self.what),
                )
            })?;
            let built = self.build(table).map_err(|e| match e {
                Error::Config { key, message } => Error::config(format!("{name}.{key}"), message),
                other => other,
            })?;
            out.insert(name.clone(), built);
        }
        Ok(out)
    }
}

/// Reads an optional string key from a plugin table.
pub fn opt_str(table: &toml::Table, key: &str) -> Result<Option<String>> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::config(key, format!("must be a string, got {other}"))),
    }
}

/// Reads an optional non-negative integer key from a plugin table.
pub fn opt_u64(table: &toml::Table, key: &str) -> Result<Option<u64>> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(other) => Err(Error::config(
            key,
            format!("must be a non-negative integer, got {other}"),
        )),
    }
}

/// Rejects keys of `table` that are not in `known` (plus `kind`), naming the first stranger.
pub fn deny_unknown(table: &toml::Table, known: &[&str]) -> Result<()> {
    for key in table.keys() {
        if key != "kind" && !known.contains(&key.as_str()) {
            return Err(Error::config(
                key.clone(),
                format!("unknown key; known keys: kind, {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Greeter: Send + Sync {
        fn hello(&self) -> String;
    }
    struct En(String);
    impl Greeter for En {
        fn hello(&self) -> String {
            format!("hello {}", self.0)
        }
    }

    fn registry() -> Registry<dyn Greeter> {
        let mut r: Registry<dyn Greeter> = Registry::new("greeter");
        r.register("en", |t: &toml::Table| {
            deny_unknown(t, &["to"])?;
            let to = opt_str(t, "to")?.unwrap_or_else(|| "world".into());
            Ok(Arc::new(En(to)) as Arc<dyn Greeter>)
        });
        r.register_disabled("fr", "french");
        r
    }

    #[test]
    fn builds_by_kind_and_tells_unknown_from_disabled() {
        let r = registry();
        let t: toml::Table = toml::from_str("kind = \"en\"\nto = \"you\"").unwrap();
        assert_eq!(r.build(&t).unwrap().hello(), "hello you");
        let err = r
            .build(&toml::from_str("kind = \"fr\"").unwrap())
            .err()
            .unwrap();
        assert!(matches!(err, Error::FeatureDisabled { .. }), "{err}");
        let err = r
            .build(&toml::from_str("kind = \"de\"").unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("known: en"), "{err}");
        let err = r
            .build(&toml::from_str("to = \"x\"").unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("kind"), "{err}");
        let err = r
            .build(&toml::from_str("kind = \"en\"\ntoo = 1").unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("`too`"), "{err}");
    }

    #[test]
    fn build_all_names_the_section_in_errors() {
        let r = registry();
        let cfg: toml::Table =
            toml::from_str("[a]\nkind = \"en\"\n[b]\nkind = \"en\"\nto = 3").unwrap();
        let err = r.build_all(&cfg).err().unwrap();
        assert!(err.to_string().contains("b.to"), "{err}");
    }
}
