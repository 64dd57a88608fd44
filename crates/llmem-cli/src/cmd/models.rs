//! `llmem models`: the catalog, and the shared way commands load it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use llmem::tokens::{Catalog, Counters};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only models whose id contains this.
    pub filter: Option<String>,
    /// A catalog file overriding or adding models.
    #[arg(long, env = "LLMEM_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The embedded catalog, with the user's file merged over it when given.
pub fn counters(catalog: Option<&Path>) -> Result<Counters> {
    let mut c = Catalog::embedded()?;
    if let Some(path) = catalog {
        c = c.with_overrides(path)?;
    }
    Ok(Counters::new(Arc::new(c)))
}

pub async fn run(args: Args) -> Result<()> {
    let counters = counters(args.catalog.as_deref())?;
    let wanted = args.filter.as_deref().map(str::to_lowercase);
    let models = counters.catalog().models().iter().filter(|m| {
        wanted
            .as_deref()
            .is_none_or(|w| m.id.to_lowercase().contains(w))
    });
    if !args.json {
        println!(
            "{:<32} {:>10} {:>9} {:>9} {:>9}  tokenizer",
            "model", "context", "max out", "$/1M in", "$/1M out"
        );
    }
    for m in models {
        if args.json {
            println!("{}", serde_json::to_string(m)?);
        } else {
            println!(
                "{:<32} {:>10} {:>9} {:>9.3} {:>9.3}  {}",
                m.id, m.context_window, m.max_output, m.input, m.output, m.tokenizer
            );
        }
    }
    Ok(())
}
