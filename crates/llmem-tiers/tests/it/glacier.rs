//! The glacier tier on object storage: a local directory and a real S3-compatible server
//! (moto, started here on 127.0.0.1 with a free port and killed at the end) and, with the
//! `azure` feature, Azure Blob Storage's emulator (Azurite, likewise).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use llmem_core::test_kit::store_conformance;
use llmem_core::{Filter, MemoryStore, Scope};
use llmem_tiers::glacier::parse_key;
use llmem_tiers::{
    GlacierConfig, GlacierStore, Tier, TierKind, TieredStore, WarmConfig, WarmStore,
};
use serde_json::json;

use crate::common::rec;
pub(crate) use crate::servers::{Server, create_bucket, python, serve, start_moto};

pub(crate) fn s3_config(moto: &Server, bucket: &str) -> GlacierConfig {
    GlacierConfig::new(format!("s3://{bucket}/archive"))
        .option("aws_endpoint", moto.endpoint())
        .option("aws_allow_http", "true")
        .option("aws_region", "us-east-1")
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
}

/// Creates a bucket with a plain S3 `PUT /bucket` (moto accepts unsigned requests).
/// A client of `bucket` on moto, to read back every object the archive wrote.
pub(crate) fn s3_client(moto: &Server, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

#[tokio::test]
async fn glacier_on_a_local_directory_conforms_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let g = GlacierStore::open(GlacierConfig::new(&url)).await.unwrap();
    store_conformance(&g).await;
    g.put(vec![rec("u", "a", "archived", 8, 1)]).await.unwrap();
    drop(g);
    let g = GlacierStore::open(GlacierConfig::new(&url)).await.unwrap();
    assert_eq!(
        g.get(&Scope::tenant("u"), &["a".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(dir.path().join("manifest.json").exists());
}

#[tokio::test]
async fn glacier_on_moto_s3_conforms_encrypts_and_restores() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-glacier");
    let key = parse_key(&"42".repeat(32)).unwrap();
    let g = GlacierStore::open(s3_config(&moto, "llmem-glacier").with_key(key))
        .await
        .unwrap();
    assert!(g.encrypted());
    store_conformance(&g).await;

    let s = Scope::tenant("u");
    let recs: Vec<_> = (0..50u64)
        .map(|i| rec("u", &format!("r{i}"), "a secret memory", 8, i))
        .collect();
    g.put(recs[..25].to_vec()).await.unwrap();
    g.put(recs[25..].to_vec()).await.unwrap();
    let snap = g.snapshot().await.unwrap();
    let f = Filter::parse(&json!({"n": {"$lt": 10}})).unwrap();
    assert_eq!(g.delete_by_filter(&s, &f).await.unwrap(), 10);
    assert_eq!(g.count(&s, &Filter::All).await.unwrap(), 40);
    g.restore(&snap).await.unwrap();
    assert_eq!(g.count(&s, &Filter::All).await.unwrap(), 50);
    let st = g.stats().await.unwrap();
    assert!(st.items >= 50 && st.bytes > 0);

    // Reopened without the key: listing works from the manifest, reading refuses clearly.
    let nokey = GlacierStore::open(s3_config(&moto, "llmem-glacier"))
        .await
        .unwrap();
    assert_eq!(
        nokey.count(&s, &Filter::All).await.unwrap(),
        50,
        "count comes from the manifest"
    );
    let err = nokey.get(&s, &["r1".into()]).await.unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    // With the key, from a fresh process-like open.
    let again = GlacierStore::open(s3_config(&moto, "llmem-glacier").with_key(key))
        .await
        .unwrap();
    let got = again.get(&s, &["r33".into()]).await.unwrap();
    assert_eq!(got[0].embedding, recs[33].embedding);
    assert!(
        again.compact().await.unwrap() >= 1,
        "compaction drops batches nothing refers to"
    );
    assert_eq!(again.count(&s, &Filter::All).await.unwrap(), 50);
}

#[tokio::test]
async fn tiered_archive_goes_to_s3() {
    let moto = start_moto();
    create_bucket(&moto, "llmem-tiered");
    let glacier: Arc<dyn Tier> = Arc::new(
        GlacierStore::open(s3_config(&moto, "llmem-tiered"))
            .await
            .unwrap(),
    );
    let store = TieredStore::builder()
        .warm(Arc::new(WarmStore::open(WarmConfig::default()).unwrap()))
        .glacier(glacier)
        .build()
        .unwrap();
    let s = Scope::tenant("u");
    for i in 0..10u64 {
        store
            .store(rec("u", &format!("r{i}"), "x", 8, i).with_metadata("old", i < 6))
            .await
            .unwrap();
    }
    let f = Filter::parse(&json!({"old": true})).unwrap();
    assert_eq!(store.archive(&s, &f).await.unwrap(), 6);
    assert_eq!(
        store.locate(&s, "r0").await.unwrap().unwrap().0,
        TierKind::Glacier
    );
    assert_eq!(store.count(&s, &Filter::All).await.unwrap(), 10);
    assert!(
        store
            .get(&Scope::tenant("intruder"), "r0")
            .await
            .unwrap()
            .is_none()
    );
}

/// Azurite's account and its published development key (the same for every Azurite).
#[cfg(feature = "azure")]
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
#[cfg(feature = "azure")]
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite, Azure Blob Storage's emulator (npm `azurite`, installed by `cargo xtask setup`),
/// in memory.
#[cfg(feature = "azure")]
fn start_azurite() -> Server {
    let cache = std::env::var_os("LLMEM_CACHE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/llmem"),
        PathBuf::from,
    );
    let bin = cache.join("azurite/node_modules/.bin/azurite-blob");
    serve("azurite-blob (`cargo xtask setup azurite`)", |port| {
        let mut c = Command::new(bin);
        c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--inMemoryPersistence", "--silent", "--skipApiVersionCheck"]);
        c
    })
}

/// Creates a container: Azure's `Create Container`, signed with the account key (Shared Key),
/// sent by the venv's Python (standard library only).
#[cfg(feature = "azure")]
fn create_container(az: &Server, container: &str) {
    const SIGNED_PUT: &str = r#"
import base64, hashlib, hmac, http.client, sys
from email.utils import formatdate
port, account, key, container = sys.argv[1:5]
date, version = formatdate(usegmt=True), "2021-08-06"
to_sign = ("PUT" + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
           + f"/{account}/{account}/{container}\nrestype:container")
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
c = http.client.HTTPConnection("127.0.0.1", int(port))
c.request("PUT", f"/{account}/{container}?restype=container", body=b"", headers={
    "x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
    "Authorization": f"SharedKey {account}:{sig}"})
r = c.getresponse()
sys.exit(0 if r.status == 201 else f"{r.status} {r.read()[:300]!r}")
"#;
    let out = Command::new(python())
        .args(["-c", SIGNED_PUT, &az.port.to_string()])
        .args([AZURITE_ACCOUNT, AZURITE_KEY, container])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "creating container {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "azure")]
fn az_config(az: &Server, container: &str) -> GlacierConfig {
    GlacierConfig::new(format!("az://{container}/archive"))
        .option("azure_storage_account_name", AZURITE_ACCOUNT)
        .option("azure_storage_access_key", AZURITE_KEY)
        .option(
            "azure_storage_endpoint",
            format!("{}/{AZURITE_ACCOUNT}", az.endpoint()),
        )
        .option("azure_allow_http", "true")
}

/// The archive at `config` (a cloud URL): the conformance suite with encryption on, then a
/// batch read back by a fresh open (manifest and batch from the server), and refused clearly
/// without the key.
#[cfg(any(feature = "azure", feature = "gcp"))]
async fn encrypted_round_trip(config: impl Fn() -> GlacierConfig, key: [u8; 32]) {
    let g = GlacierStore::open(config().with_key(key)).await.unwrap();
    assert!(g.encrypted());
    store_conformance(&g).await;
    let s = Scope::tenant("u");
    let recs: Vec<_> = (0..30u64)
        .map(|i| rec("u", &format!("r{i}"), "an archived memory", 8, i))
        .collect();
    g.put(recs.clone()).await.unwrap();
    drop(g);
    let again = GlacierStore::open(config().with_key(key)).await.unwrap();
    assert_eq!(again.count(&s, &Filter::All).await.unwrap(), 30);
    let got = again.get(&s, &["r17".into()]).await.unwrap();
    assert_eq!(got[0].embedding, recs[17].embedding);
    assert_eq!(got[0].text, "an archived memory");
    let nokey = GlacierStore::open(config()).await.unwrap();
    let err = nokey.get(&s, &["r17".into()]).await.unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[cfg(feature = "azure")]
#[tokio::test]
async fn glacier_on_azurite_blob_storage_conforms_encrypts_and_reopens() {
    let az = start_azurite();
    create_container(&az, "llmem-glacier");
    let key = parse_key(&"24".repeat(32)).unwrap();
    encrypted_round_trip(|| az_config(&az, "llmem-glacier"), key).await;
    // The container is really Azure's: a store of another container does not see the archive.
    create_container(&az, "llmem-other");
    let other = GlacierStore::open(az_config(&az, "llmem-other").with_key(key))
        .await
        .unwrap();
    assert_eq!(
        other
            .count(&Scope::tenant("u"), &Filter::All)
            .await
            .unwrap(),
        0
    );
}

/// A GCS emulator (PyPI `gcp-storage-emulator`, in the venv), in memory, with the bucket made.
/// Its XML API (the one object_store uses for objects) leaves out the `ETag` and
/// `Last-Modified` headers that GCS sends and object_store requires; the harness adds them.
#[cfg(feature = "gcp")]
fn start_gcs(bucket: &str) -> Server {
    const WITH_HEADERS: &str = r#"
import hashlib, runpy, sys
from email.utils import formatdate
import gcp_storage_emulator.handlers.objects as objects
def with_headers(handler):
    def run(request, response, storage, *args, **kwargs):
        out = handler(request, response, storage, *args, **kwargs)
        if int(response.status) < 300:
            data = storage.get_file(request.params["bucket_name"], request.params["object_id"])
            response["ETag"] = '"%s"' % hashlib.md5(data).hexdigest()
            response["Last-Modified"] = formatdate(usegmt=True)
        return out
    return run
objects.xml_upload = with_headers(objects.xml_upload)
objects.download = with_headers(objects.download)
sys.argv = ["gcp-storage-emulator"] + sys.argv[1:]
runpy.run_module("gcp_storage_emulator", run_name="__main__")
"#;
    serve("gcp-storage-emulator", |port| {
        let mut c = Command::new(python());
        c.args(["-c", WITH_HEADERS, "start", "--in-memory", "--quiet"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--default-bucket", bucket]);
        c
    })
}

/// `gs://` at the emulator: object_store reads the endpoint from the service-account key,
/// and the emulator needs no OAuth.
#[cfg(feature = "gcp")]
fn gcs_config(gcs: &Server, bucket: &str) -> GlacierConfig {
    let key = json!({
        "private_key": "unused",
        "private_key_id": "unused",
        "client_email": "tests@llmem.invalid",
        "disable_oauth": true,
        "gcs_base_url": gcs.endpoint(),
    });
    GlacierConfig::new(format!("gs://{bucket}/archive"))
        .option("google_service_account_key", key.to_string())
        .option("allow_http", "true")
}

#[cfg(feature = "gcp")]
#[tokio::test]
async fn glacier_on_a_gcs_emulator_conforms_encrypts_and_reopens() {
    let gcs = start_gcs("llmemglacier");
    let key = parse_key(&"5a".repeat(32)).unwrap();
    encrypted_round_trip(|| gcs_config(&gcs, "llmemglacier"), key).await;
}
