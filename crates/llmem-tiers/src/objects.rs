//! Object storage from a URL, for the tiers that live there (glacier, a cold tier on
//! `cold_url`) and for objects written with conditional puts (shared sessions):
//!
//! - `s3://bucket/prefix`: options as object_store's `AmazonS3ConfigKey` names them
//!   (`aws_endpoint`, `aws_region`, `aws_allow_http`, credentials…), on top of the `AWS_*`
//!   environment;
//! - `gs://bucket/prefix` (feature `gcp`) and `az://container/prefix` (feature `azure`) with
//!   object_store's Google and Azure options (credentials also from the environment);
//! - a local directory or `file:///dir`.
//!
//! [`Versioned`] reads and writes small objects with their ETag, so that two processes updating
//! one object never overwrite each other's change unseen (`If-Match`, `If-None-Match: *`).

use std::sync::Arc;

use llmem_core::{Error, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

fn os_err(tier: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::storage(tier, format!("{what}: {e}"))
}

/// Whether `url` names object storage (or `file://`) rather than a plain local path.
pub fn is_url(url: &str) -> bool {
    url.contains("://")
}

/// The store and the prefix inside it that `url` names; errors name `<tier>.url` and
/// `<tier>.options.<key>`.
pub fn open(
    url: &str,
    options: &[(String, String)],
    tier: &str,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let key = format!("{tier}.url");
    let key = key.as_str();
    if let Some(rest) = url.strip_prefix("s3://") {
        let mut b = AmazonS3Builder::from_env().with_url(format!("s3://{rest}"));
        for (k, v) in options {
            let ck: AmazonS3ConfigKey = k
                .parse()
                .map_err(|e| Error::config(format!("{tier}.options.{k}"), format!("{e}")))?;
            b = b.with_config(ck, v);
        }
        let prefix = rest
            .split_once('/')
            .map(|(_, p)| p.trim_matches('/'))
            .unwrap_or("");
        return Ok((
            Arc::new(b.build().map_err(|e| os_err(tier, "configuring S3", e))?),
            Path::from(prefix),
        ));
    }
    if ["gs://", "az://", "abfs://", "abfss://", "azure://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        return cloud_store(url, options, tier);
    }
    if is_url(url) && !url.starts_with("file://") {
        return Err(Error::config(
            key,
            format!(
                "`{url}`: use a local directory, file://, s3://, gs:// (feature `gcp`) or az:// (feature `azure`)"
            ),
        ));
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {dir}"), e))?;
    Ok((
        Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| os_err(tier, dir, e))?),
        Path::from(""),
    ))
}

/// A Google Cloud Storage or Azure store from a `gs://` / `az://` URL and its options.
#[cfg(any(feature = "gcp", feature = "azure"))]
fn cloud_store(
    url: &str,
    options: &[(String, String)],
    tier: &str,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let key = format!("{tier}.url");
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::config(&key, format!("`{url}` is not a URL: {e}")))?;
    // object_store skips keys it does not know; a typo must not silently drop a setting.
    for (k, _) in options {
        let known = match parsed.scheme() {
            #[cfg(feature = "gcp")]
            "gs" => k.parse::<object_store::gcp::GoogleConfigKey>().is_ok(),
            #[cfg(feature = "azure")]
            "az" | "abfs" | "abfss" | "azure" => {
                k.parse::<object_store::azure::AzureConfigKey>().is_ok()
            }
            _ => true,
        };
        if !known {
            return Err(Error::config(
                format!("{tier}.options.{k}"),
                format!(
                    "not an option of the `{}` object store (see object_store's config keys)",
                    parsed.scheme()
                ),
            ));
        }
    }
    let (store, path) = object_store::parse_url_opts(
        &parsed,
        options.iter().map(|(k, v)| (k.as_str(), v.clone())),
    )
    .map_err(|e| Error::config(&key, format!("`{url}`: {e}")))?;
    Ok((Arc::from(store), path))
}

#[cfg(not(any(feature = "gcp", feature = "azure")))]
fn cloud_store(
    url: &str,
    _: &[(String, String)],
    tier: &str,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    Err(Error::config(
        format!("{tier}.url"),
        format!(
            "`{url}` needs llmem-tiers built with the `gcp` (gs://) or `azure` (az://) feature"
        ),
    ))
}

/// `name` under `prefix`.
pub fn child(prefix: &Path, name: &str) -> Path {
    if prefix.as_ref().is_empty() {
        Path::from(name)
    } else {
        Path::from(format!("{}/{name}", prefix.as_ref()))
    }
}

/// The version of an object as read: what a conditional write names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// What a conditional write found.
#[derive(Debug)]
pub enum Written {
    /// Written; the object's new version.
    Done(Version),
    /// Someone else wrote (or created) the object since it was read: read it again, merge,
    /// and write with the new version.
    Conflict,
}

/// Small objects read and written with their version (see the module docs).
#[derive(Debug, Clone)]
pub struct Versioned {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    tier: &'static str,
}

impl Versioned {
    /// Objects under `url` (see [`open`]).
    pub fn open(url: &str, options: &[(String, String)], tier: &'static str) -> Result<Self> {
        let (store, prefix) = open(url, options, tier)?;
        Ok(Versioned {
            store,
            prefix,
            tier,
        })
    }

    /// The object `name` and its version, or `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, Version)>> {
        self.get_if_changed(name, None).await.map(|r| match r {
            Fetched::Changed(b, v) => Some((b, v)),
            _ => None,
        })
    }

    /// The object `name` unless its ETag is still `known`.
    pub async fn get_if_changed(&self, name: &str, known: Option<&Version>) -> Result<Fetched> {
        let path = child(&self.prefix, name);
        let opts = GetOptions {
            if_none_match: known.and_then(|v| v.e_tag.clone()),
            ..GetOptions::default()
        };
        match self.store.get_opts(&path, opts).await {
            Ok(r) => {
                let version = Version {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| os_err(self.tier, &format!("reading {path}"), e))?;
                Ok(Fetched::Changed(bytes.to_vec(), version))
            }
            Err(object_store::Error::NotModified { .. }) => Ok(Fetched::Unchanged),
            Err(object_store::Error::NotFound { .. }) => Ok(Fetched::Missing),
            Err(e) => Err(os_err(self.tier, &format!("reading {path}"), e)),
        }
    }

    /// Writes `name` if it is still at `expected` (`None`: only if it does not exist).
    pub async fn put_if(
        &self,
        name: &str,
        bytes: Vec<u8>,
        expected: Option<&Version>,
    ) -> Result<Written> {
        let path = child(&self.prefix, name);
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: v.e_tag.clone(),
                version: v.version.clone(),
            }),
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(r) => Ok(Written::Done(Version {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(Written::Conflict),
            Err(e) => Err(os_err(self.tier, &format!("writing {path}"), e)),
        }
    }

    /// Deletes `name` (gone already is fine).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = child(&self.prefix, name);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(self.tier, &format!("deleting {path}"), e)),
        }
    }

    /// The names of the objects under `dir` (relative to the prefix).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let base = child(&self.prefix, dir);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(|e| os_err(self.tier, &format!("listing {base}"), e))?;
        let strip = format!("{}/", self.prefix.as_ref());
        Ok(metas
            .into_iter()
            .map(|m| {
                let p = m.location.as_ref();
                if self.prefix.as_ref().is_empty() {
                    p.to_owned()
                } else {
                    p.strip_prefix(&strip).unwrap_or(p).to_owned()
                }
            })
            .collect())
    }
}

/// What [`Versioned::get_if_changed`] found.
#[derive(Debug)]
pub enum Fetched {
    Changed(Vec<u8>, Version),
    Unchanged,
    Missing,
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    #[cfg(feature = "gcp")]
    #[test]
    fn gs_urls_build_a_gcs_store_with_options() {
        let url = "gs://llmem-archive/tenant-a";
        let mut options = vec![("google_bucket".to_owned(), "llmem-archive".to_owned())];
        let (store, path) = cloud_store(url, &options, "glacier").unwrap();
        assert_eq!(path.as_ref(), "tenant-a");
        assert!(store.to_string().contains("llmem-archive"), "{store}");
        options.push(("no_such_option".into(), "x".into()));
        let e = cloud_store(url, &options, "glacier")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no_such_option") || e.contains("not a valid"),
            "{e}"
        );
    }

    #[cfg(feature = "azure")]
    #[test]
    fn az_urls_build_an_azure_store_and_say_what_is_missing() {
        let url = "az://archive/tenant-a";
        let e = cloud_store(url, &[], "glacier").unwrap_err().to_string();
        assert!(e.contains("az://archive/tenant-a"), "{e}");
        let options = vec![
            (
                "azure_storage_account_name".to_owned(),
                "devstoreaccount1".to_owned(),
            ),
            ("azure_storage_use_emulator".to_owned(), "true".to_owned()),
        ];
        let (_, path) = cloud_store(url, &options, "glacier").unwrap();
        assert_eq!(path.as_ref(), "tenant-a");
    }
}
