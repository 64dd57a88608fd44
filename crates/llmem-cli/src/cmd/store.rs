//! `llmem store`, `search`, `import`, `export`, `snapshot`, `archive`, `forget`, `update`,
//! `stats`: the tiered long-term memory (`llmem-tiers`) in a data directory, with an archive
//! tier on object storage when `--glacier URL` is given.
//!
//! Where the memory lives comes from the same configuration as `llmem chat` and `llmem serve`:
//! `llmem.toml` (`--config`, else `$LLMEM_CONFIG`, else `./llmem.toml` when present), then the
//! `LLMEM_TIERS_*` variables, then these commands' flags (`--dir` over `tiers.dir`, `--cold`,
//! `--glacier`, …); with no directory named anywhere, `./.llmem`. The directory holds the warm
//! tier with its write-ahead log (`memory/`), the cold tier as a Lance dataset (`cold/`, with
//! the `lance` feature and `tiers.cold`) and the list of snapshots, laid out and migrated by
//! `llmem::open_tiered`. Records are text; search is lexical (BM25) unless the records carry
//! embeddings and a query vector is given.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use llmem::core::{Filter, MemoryRecord, RecordKind, Scope, SearchRequest};
use llmem::tiers::{TierKind, TieredStore};
use llmem::{Config, TierSettings};
use serde_json::{Value, json};

/// Where the memory lives and whose it is (shared by every store subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// llmem.toml (default: $LLMEM_CONFIG, else ./llmem.toml when present): its `[tiers]`
    /// says where the memory lives, as for `llmem chat` and `llmem serve`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory (overrides tiers.dir; default when neither: ./.llmem).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The tenant (user) whose memory this is (`--user` is the same).
    #[arg(
        long,
        short,
        visible_alias = "user",
        env = "LLMEM_TENANT",
        default_value = "default"
    )]
    pub tenant: String,
    /// Restrict to one session of the tenant.
    #[arg(long)]
    pub session: Option<String>,
    /// The cold tier on Lance in <dir>/cold (overrides tiers.cold; needs the `lance` feature).
    #[arg(long)]
    pub cold: bool,
    /// Warm-tier capacity in records; past it the least recently used move to cold (overrides
    /// tiers.warm_max_items).
    #[arg(long)]
    pub warm_items: Option<usize>,
    /// Embedding dimensions of the cold tier (overrides tiers.dimensions).
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// An archive tier on object storage: a local directory, `s3://bucket/prefix`,
    /// `gs://…` or `az://…` (overrides tiers.glacier; `LLMEM_GLACIER_KEY` encrypts it; needs
    /// the `glacier` feature).
    #[arg(long, value_name = "URL")]
    pub glacier: Option<String>,
}

/// The data directory when neither `--dir` nor `tiers.dir` names one.
const DEFAULT_DIR: &str = ".llmem";

impl Target {
    fn scope(&self) -> Scope {
        match &self.session {
            Some(x) => Scope::session(self.tenant.clone(), x.clone()),
            None => Scope::tenant(self.tenant.clone()),
        }
    }

    /// `[tiers]` of the configuration, with this command's flags over it.
    fn tiers(&self) -> Result<TierSettings> {
        let config = Config::discover(self.config.as_deref())?;
        let mut t = config.tiers;
        if let Some(d) = &self.dir {
            t.dir = Some(d.clone());
        }
        if t.dir.is_none() {
            t.dir = Some(PathBuf::from(DEFAULT_DIR));
        }
        if self.cold {
            t.cold = true;
        }
        if let Some(n) = self.warm_items {
            t.warm_max_items = Some(n);
        }
        if let Some(n) = self.dimensions {
            t.dimensions = n;
        }
        if let Some(g) = &self.glacier {
            t.glacier = Some(g.clone());
        }
        Ok(t)
    }

    /// Opens the tiered store the configuration describes: the same directories and layout as
    /// the memory managers of `llmem chat` and `serve`, so these commands see what they stored.
    async fn open(&self) -> Result<TieredStore> {
        let tiers = self.tiers()?;
        let dir = tiers.dir.clone().unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        llmem::open_tiered(&tiers)
            .await
            .with_context(|| format!("opening the memory in {}", dir.display()))
    }

    /// The data directory the configuration and flags name.
    fn dir(&self) -> Result<PathBuf> {
        Ok(self
            .tiers()?
            .dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)))
    }
}

/// A text argument: as given, or standard input for `-`.
fn text_arg(text: &str) -> Result<String> {
    if text == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")
    } else {
        Ok(text.to_owned())
    }
}

fn parse_filter(f: Option<&str>) -> Result<Filter> {
    match f {
        None => Ok(Filter::All),
        Some(s) => {
            let v: Value =
                serde_json::from_str(s).with_context(|| format!("--filter `{s}` is not JSON"))?;
            Ok(Filter::parse(&v)?)
        }
    }
}

/// `llmem store`: stores one text record and prints its id.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub target: Target,
    /// The text to remember (`-` reads standard input).
    pub text: String,
    /// The record's kind: `conversation` (the default), `knowledge`, `episode` or `summary`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Metadata as `key=value` (a JSON value, or else a string); repeatable.
    #[arg(long = "meta", short = 'm', value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// The record id (default: a new one).
    #[arg(long)]
    pub id: Option<String>,
    /// Put it in this tier (`warm`, `cold`, `glacier`) instead of warm.
    #[arg(long)]
    pub tier: Option<String>,
}

pub async fn store(args: StoreArgs) -> Result<()> {
    let text = text_arg(&args.text)?;
    if text.trim().is_empty() {
        bail!("nothing to store: the text is empty");
    }
    let mut r = MemoryRecord::new(args.target.tenant.clone(), text);
    if let Some(s) = &args.target.session {
        r = r.with_session(s.clone());
    }
    if let Some(k) = &args.kind {
        r = r.with_kind(RecordKind::parse(k)?);
    }
    if let Some(id) = &args.id {
        r = r.with_id(id.clone());
    }
    for kv in &args.meta {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--meta `{kv}`: expected KEY=VALUE"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        r = r.with_metadata(k, v);
    }
    let tier = args.tier.as_deref().map(TierKind::parse).transpose()?;
    let store = args.target.open().await?;
    let id = match tier {
        Some(t) => store.store_in(r, t).await?,
        None => store.store(r).await?,
    };
    println!("{id}");
    Ok(())
}

/// `llmem search`: the best records for a query (BM25 over the text, fused with vector
/// similarity when `--vector` is given).
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub target: Target,
    /// The query text.
    pub query: String,
    /// How many results.
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// A metadata filter (JSON, e.g. `{"kind": "knowledge"}`).
    #[arg(long)]
    pub filter: Option<String>,
    /// A query embedding as a JSON array, for hybrid search over embedded records.
    #[arg(long)]
    pub vector: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn search(args: SearchArgs) -> Result<()> {
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let mut req = SearchRequest::text(args.query.clone(), args.k)
        .with_filter(parse_filter(args.filter.as_deref())?);
    if let Some(v) = &args.vector {
        let v: Vec<f32> =
            serde_json::from_str(v).context("--vector must be a JSON array of numbers")?;
        req.vector = Some(v);
    }
    let store = args.target.open().await?;
    let hits = store.search(&args.target.scope(), &req).await?;
    let mut out = std::io::stdout().lock();
    for h in &hits {
        if args.json {
            writeln!(
                out,
                "{}",
                json!({"id": h.record.id, "score": h.score, "text": h.record.text, "kind": h.record.kind.as_str()})
            )?;
        } else {
            writeln!(
                out,
                "{:.4}\t{}\t{}",
                h.score,
                h.record.id,
                h.record.text.replace('\n', " ")
            )?;
        }
    }
    if hits.is_empty() && !args.json {
        eprintln!("no match");
    }
    // The hits count as reads (for promotion to warm): keep them before exiting.
    store.flush_reads().await?;
    Ok(())
}

/// `llmem import`: stores the records of a JSONL file (one record object per line; `text` is
/// required, `tenant` defaults to `--tenant`, `id` and times to new values).
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub target: Target,
    /// The JSONL file.
    pub file: PathBuf,
    /// Records per write.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A record from one JSONL line: the line's fields over a fresh record of `tenant`.
fn record_from_line(line: &str, tenant: &str, session: Option<&str>) -> Result<MemoryRecord> {
    let v: Value = serde_json::from_str(line)?;
    let Value::Object(fields) = v else {
        bail!("expected a JSON object");
    };
    let text = fields
        .get("text")
        .and_then(Value::as_str)
        .context("the record has no string `text`")?;
    let mut base = MemoryRecord::new(tenant, text);
    if let Some(s) = session {
        base = base.with_session(s);
    }
    let Value::Object(mut merged) = serde_json::to_value(&base)? else {
        bail!("a record did not serialise to an object");
    };
    merged.extend(fields);
    Ok(serde_json::from_value(Value::Object(merged))?)
}

pub async fn import(args: ImportArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (n, line) in &lines {
        records.push(
            record_from_line(line, &args.target.tenant, args.target.session.as_deref())
                .with_context(|| format!("{}:{}", args.file.display(), n + 1))?,
        );
    }
    let store = args.target.open().await?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(records.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    };
    let total = records.len();
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(args.batch));
        let n = rest.len() as u64;
        store.store_batch(rest).await?;
        bar.inc(n);
        rest = tail;
    }
    bar.finish_and_clear();
    eprintln!(
        "imported {total} records into {}",
        args.target.dir()?.display()
    );
    Ok(())
}

/// `llmem export`: the tenant's records as JSONL (including superseded versions).
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output file (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Only records passing this filter (JSON).
    #[arg(long)]
    pub filter: Option<String>,
}

pub async fn export(args: ExportArgs) -> Result<()> {
    let store = args.target.open().await?;
    let filter = parse_filter(args.filter.as_deref())?;
    let records = store.query(&args.target.scope(), &filter, None).await?;
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::new(sink);
    for r in &records {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    if args.output.is_some() {
        eprintln!("exported {} records", records.len());
    }
    Ok(())
}

/// `llmem snapshot`: records the state of every tier (prints the id), or rolls back to one.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: Target,
    /// Roll back to this snapshot instead of taking one.
    #[arg(long, value_name = "ID")]
    pub restore: Option<String>,
}

pub async fn snapshot(args: SnapshotArgs) -> Result<()> {
    let store = args.target.open().await?;
    match &args.restore {
        Some(id) => {
            store.restore(id).await?;
            eprintln!("restored snapshot {id}");
        }
        None => println!("{}", store.snapshot().await?),
    }
    Ok(())
}

/// `llmem archive`: moves the tenant's records that match a filter to the glacier tier.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub target: Target,
    /// Which records (a JSON filter, e.g. `{"kind": "conversation"}`); default: all of them.
    #[arg(long)]
    pub filter: Option<String>,
}

pub async fn archive(args: ArchiveArgs) -> Result<()> {
    if args.target.tiers()?.glacier.is_none() {
        bail!(
            "llmem archive needs a glacier tier: pass --glacier URL or set tiers.glacier in llmem.toml"
        );
    }
    let filter = parse_filter(args.filter.as_deref())?;
    let store = args.target.open().await?;
    let n = store.archive(&args.target.scope(), &filter).await?;
    eprintln!("archived {n} records");
    Ok(())
}

/// `llmem forget`: forgets a user's memories for good.
#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Which memories (a JSON filter, e.g. `{"text": {"$contains": "card"}}`); without it,
    /// everything of the user: every memory in every tier and every saved session.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Forgets the user's memories that pass the filter in every tier, with their earlier
/// versions, the quotes of their text in other memories and in the user's saved sessions;
/// the tiers rewrite the files and objects that held them (docs/forget.md).
pub async fn forget(args: ForgetArgs) -> Result<()> {
    let filter = parse_filter(args.filter.as_deref())?;
    if args.target.session.is_some() {
        bail!(
            "llmem forget works on a whole user: drop --session and narrow with --filter '{{\"session\": \"…\"}}'"
        );
    }
    let store = args.target.open().await?;
    let sessions = args.target.dir()?.join("sessions");
    let out = llmem::forget_user(&store, Some(&sessions), &args.target.tenant, &filter)
        .await
        .with_context(|| format!("forgetting memories of user `{}`", args.target.tenant))?;
    if out.memories == 0 && out.sessions == 0 {
        eprintln!(
            "nothing to forget: no memory of user `{}` matches the filter",
            args.target.tenant
        );
    } else {
        eprintln!(
            "forgot {} memories of user `{}` ({} other memories and {} sessions scrubbed of them)",
            out.memories, args.target.tenant, out.rewritten, out.sessions
        );
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// `llmem update`: replaces a memory's text, keeping the earlier version.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub target: Target,
    /// The memory's id (from `llmem search` or `llmem export`).
    pub id: String,
    /// The new text (`-` reads standard input).
    pub text: String,
}

/// Replaces the text of a memory; it keeps its id, and its previous version stays findable
/// by id as an earlier version (searches skip it). Prints the memory as stored.
pub async fn update(args: UpdateArgs) -> Result<()> {
    let text = text_arg(&args.text)?;
    let store: std::sync::Arc<dyn llmem::core::MemoryStore> =
        std::sync::Arc::new(args.target.open().await?);
    let r = llmem::update_memory(
        &store,
        None,
        &args.target.tenant,
        &args.id,
        &text,
        None,
        None,
    )
    .await
    .with_context(|| format!("updating memory `{}`", args.id))?;
    println!(
        "{}",
        json!({"id": r.id, "text": r.text, "supersedes": r.supersedes})
    );
    Ok(())
}

/// `llmem consolidate`: summarises old conversation memories by window.
#[derive(Debug, clap::Args)]
pub struct ConsolidateArgs {
    #[command(flatten)]
    pub target: Target,
    /// Every user with conversation memories, not only `--user`.
    #[arg(long)]
    pub all: bool,
    /// Memories said more than this many days ago (overrides consolidation.older_than_days).
    #[arg(long)]
    pub older_than_days: Option<u64>,
    /// `day` or `week` (overrides consolidation.window).
    #[arg(long, value_parser = ["day", "week"])]
    pub window: Option<String>,
}

/// Summarises the user's (or, with `--all`, every user's) old conversation memories by
/// window into summary records linked to their sources (`llmem::consolidate`), with the
/// extractive summariser; prints one JSON line per user.
pub async fn consolidate(args: ConsolidateArgs) -> Result<()> {
    let config = Config::discover(args.target.config.as_deref())?;
    let mut settings = config.consolidation.clone();
    if let Some(d) = args.older_than_days {
        settings.older_than_days = d;
    }
    match args.window.as_deref() {
        Some("week") => settings.window = llmem::ConsolidationWindow::Week,
        Some(_) => settings.window = llmem::ConsolidationWindow::Day,
        None => {}
    }
    settings.validate()?;
    let counter: std::sync::Arc<dyn llmem::core::TokenCounter> =
        llmem::tokens::Counters::embedded()?.for_model(&config.memory.model)?;
    let store: std::sync::Arc<dyn llmem::core::MemoryStore> =
        std::sync::Arc::new(args.target.open().await?);
    let users = if args.all {
        llmem::consolidation_users(&*store).await?
    } else {
        vec![args.target.tenant.clone()]
    };
    let now = llmem::core::Timestamp::now();
    for user in users {
        let out = llmem::consolidate(&store, None, None, counter.clone(), &user, &settings, now)
            .await
            .with_context(|| format!("consolidating the memories of user `{user}`"))?;
        eprintln!(
            "user `{user}`: {} summaries of {} memories",
            out.summaries.len(),
            out.sources
        );
        println!(
            "{}",
            json!({"user": user, "summaries": out.summaries, "sources": out.sources})
        );
    }
    Ok(())
}

/// `llmem stats`: per tier items, bytes, usage, and the tenant's record count.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn stats(args: StatsArgs) -> Result<()> {
    let store = args.target.open().await?;
    let metrics = store.metrics().await?;
    let mine = store.count(&args.target.scope(), &Filter::All).await?;
    if args.json {
        println!(
            "{}",
            json!({"dir": dir_str(&args.target.dir()?), "tenant": args.target.tenant, "records": mine, "tiers": metrics})
        );
        return Ok(());
    }
    println!(
        "{} ({} records of tenant `{}`)",
        args.target.dir()?.display(),
        mine,
        args.target.tenant
    );
    println!(
        "{:<8} {:>10} {:>14} {:>8}",
        "tier", "items", "bytes", "usage"
    );
    for m in &metrics {
        let usage = m
            .usage_percent
            .map_or("-".to_owned(), |u| format!("{u:.1}%"));
        println!("{:<8} {:>10} {:>14} {:>8}", m.tier, m.items, m.bytes, usage);
    }
    Ok(())
}

fn dir_str(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_fills_in_tenant_id_and_times() {
        let r = record_from_line(r#"{"text": "hi", "metadata": {"a": 1}}"#, "t", None).unwrap();
        assert_eq!((r.tenant.as_str(), r.text.as_str()), ("t", "hi"));
        assert!(!r.id.is_empty());
        assert_eq!(r.metadata["a"], 1);
        let r =
            record_from_line(r#"{"text": "x", "id": "k", "tenant": "other"}"#, "t", None).unwrap();
        assert_eq!((r.id.as_str(), r.tenant.as_str()), ("k", "other"));
        assert!(record_from_line(r#"{"id": "k"}"#, "t", None).is_err());
        assert!(record_from_line("[1]", "t", None).is_err());
    }
}
