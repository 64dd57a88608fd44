//! API keys of `llmem serve`: `llmem keys add|list|revoke`, and the key store the server
//! checks every request against.
//!
//! A key is shown once, when it is made; the file keeps only its SHA-256, the tenant it opens
//! and whether it may manage keys. The server re-reads the file when it changes, so a key added
//! or revoked from the command line takes effect on the running server within a second.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use llmem::Config;
use llmem::core::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::memapi::{Principal, check_name};
use super::product::ConfigArgs;

/// What every key starts with, so that a leaked one is recognisable (and greppable).
pub const KEY_PREFIX: &str = "llmem-sk-";

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Make a key for a tenant; prints it once (only its hash is kept).
    Add(AddArgs),
    /// List the keys: id, tenant, admin, made, revoked (never the keys themselves).
    List(ConfigArgs),
    /// Revoke a key by its id; it is refused from then on.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The tenant the key opens (letters, digits, `-`, `_`, `.`; up to 64).
    #[arg(long)]
    pub tenant: String,
    /// The key may also make, list and revoke keys (`/v1/admin/keys`).
    #[arg(long)]
    pub admin: bool,
    #[command(flatten)]
    pub place: ConfigArgs,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The key's id, as `llmem keys list` shows it.
    pub id: String,
    #[command(flatten)]
    pub place: ConfigArgs,
}

/// One key as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub admin: bool,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A key as the API and `keys list` show it: everything but the hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: String,
    pub admin: bool,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl From<&KeyEntry> for KeyInfo {
    fn from(e: &KeyEntry) -> Self {
        KeyInfo {
            id: e.id.clone(),
            tenant: e.tenant.clone(),
            admin: e.admin,
            created_at: e.created_at.clone(),
            revoked_at: e.revoked_at.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

/// Where the keys of `config` live: `server.keys_file`, else `<tiers.dir>/keys.json`.
pub fn keys_path(config: &Config) -> Option<PathBuf> {
    config
        .server
        .keys_file
        .clone()
        .or_else(|| config.tiers.dir.as_ref().map(|d| d.join("keys.json")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    Ok(hex(&buf))
}

fn sha256_hex(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A tenant name for a key: 1–64 of letters, digits, `-`, `_` and `.`.
pub fn check_tenant(tenant: &str) -> std::result::Result<(), super::memapi::ApiError> {
    check_name("tenant", tenant)?;
    if tenant.len() > 64
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || tenant.starts_with('.')
    {
        return Err(super::memapi::ApiError::bad(format!(
            "tenant `{tenant}`: use 1 to 64 letters, digits, `-`, `_` or `.` (not first)"
        )));
    }
    Ok(())
}

/// The keys file, read again when it changes on disk.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    state: parking_lot::Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    file: KeyFile,
    modified: Option<SystemTime>,
    checked: Instant,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<KeyFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("the keys file {} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading the keys file {}", path.display())),
    }
}

impl KeyStore {
    /// The store at `path` (empty when the file does not exist yet).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = read(&path)?;
        Ok(KeyStore {
            state: parking_lot::Mutex::new(Loaded {
                file,
                modified: modified(&path),
                checked: Instant::now(),
            }),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file if it changed, at most once a second; a file that became unreadable
    /// keeps the keys last read (and says so in the log).
    fn refresh(&self, st: &mut Loaded) {
        if st.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        st.checked = Instant::now();
        let m = modified(&self.path);
        if m == st.modified {
            return;
        }
        match read(&self.path) {
            Ok(f) => {
                st.file = f;
                st.modified = m;
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "keeping the keys last read"),
        }
    }

    fn write(&self, file: &KeyFile) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(file)?;
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))?;
        Ok(())
    }

    /// Changes the file under its lock: read it fresh, change, write it back.
    fn change<T>(&self, f: impl FnOnce(&mut KeyFile) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock();
        let mut file = read(&self.path)?;
        let out = f(&mut file)?;
        self.write(&file)?;
        st.modified = modified(&self.path);
        st.checked = Instant::now();
        st.file = file;
        Ok(out)
    }

    /// Makes a key for `tenant`; returns its entry and the key, which is not kept.
    pub fn add(&self, tenant: &str, admin: bool) -> Result<(KeyInfo, String)> {
        check_tenant(tenant).map_err(|e| anyhow::anyhow!(e.message))?;
        let key = format!("{KEY_PREFIX}{}", random_hex(24)?);
        let entry = KeyEntry {
            id: format!("key_{}", random_hex(6)?),
            tenant: tenant.to_owned(),
            admin,
            sha256: sha256_hex(&key),
            created_at: Timestamp::now().to_rfc3339(),
            revoked_at: None,
        };
        let info = KeyInfo::from(&entry);
        self.change(|f| {
            f.keys.push(entry);
            Ok(())
        })?;
        Ok((info, key))
    }

    /// Every key, revoked ones too, oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut st = self.state.lock();
        self.refresh(&mut st);
        st.file.keys.iter().map(KeyInfo::from).collect()
    }

    /// Revokes the key `id`; false when no such key exists. Revoking twice is not an error.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        self.change(|f| {
            let Some(e) = f.keys.iter_mut().find(|e| e.id == id) else {
                return Ok(false);
            };
            if e.revoked_at.is_none() {
                e.revoked_at = Some(Timestamp::now().to_rfc3339());
            }
            Ok(true)
        })
    }

    /// Whether any key is in force (then every call needs one).
    pub fn active(&self) -> bool {
        let mut st = self.state.lock();
        self.refresh(&mut st);
        st.file.keys.iter().any(|e| e.revoked_at.is_none())
    }

    /// The caller a bearer key stands for; `None` for an unknown or revoked key.
    pub fn authenticate(&self, key: &str) -> Option<Principal> {
        let hash = sha256_hex(key);
        let mut st = self.state.lock();
        self.refresh(&mut st);
        let mut found = None;
        // Every entry is compared, so the time taken does not tell which one matched.
        for e in &st.file.keys {
            if same(&e.sha256, &hash) && e.revoked_at.is_none() {
                found = Some(Principal::tenant(e.tenant.clone(), e.admin));
            }
        }
        found
    }
}

fn store_at(place: &ConfigArgs) -> Result<KeyStore> {
    let config = place.config()?;
    let path = keys_path(&config).context(
        "no place for keys: pass --dir DIR, set tiers.dir, or set server.keys_file in llmem.toml",
    )?;
    KeyStore::open(path)
}

pub async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Add(a) => {
            let store = store_at(&a.place)?;
            let (info, key) = store.add(&a.tenant, a.admin)?;
            // The key alone on stdout (for scripts); what it is on stderr.
            println!("{key}");
            eprintln!(
                "made {} for tenant `{}`{} in {}; the key is shown only now, keep it secret",
                info.id,
                info.tenant,
                if info.admin { " (admin)" } else { "" },
                store.path().display()
            );
        }
        Cmd::List(place) => {
            let store = store_at(&place)?;
            let keys = store.list();
            if keys.is_empty() {
                eprintln!("no keys in {}", store.path().display());
            }
            for k in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.tenant,
                    if k.admin { "admin" } else { "tenant" },
                    k.created_at,
                    k.revoked_at
                        .map_or("active".to_owned(), |r| format!("revoked {r}"))
                );
            }
        }
        Cmd::Revoke(a) => {
            let store = store_at(&a.place)?;
            if !store.revoke(&a.id)? {
                bail!(
                    "no key `{}` in {}: `llmem keys list` shows the ids",
                    a.id,
                    store.path().display()
                );
            }
            eprintln!("revoked {}", a.id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_hashes_and_revocation_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("keys.json")).unwrap();
        assert!(!store.active());
        let (info, key) = store.add("acme", false).unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&key), "the key itself is never written");
        assert_eq!(
            store.authenticate(&key),
            Some(Principal::tenant("acme", false))
        );
        assert_eq!(store.authenticate("llmem-sk-wrong"), None);
        assert!(store.revoke(&info.id).unwrap());
        assert_eq!(store.authenticate(&key), None);
        assert!(!store.revoke("key_nope").unwrap());
        assert!(store.add("../x", false).is_err());
    }
}
