//! `llmem reembed`: every memory of the data directory embedded again with the configured
//! embedder, after a change of model (`llmem::reembed`).

use anyhow::Result;

use crate::cmd::product::{ConfigArgs, plugins};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub place: ConfigArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let config = args.place.config()?;
    let mut shown = 0;
    let done = llmem::reembed(&config, &plugins(), |done, total| {
        // A line every tenth of the way, and at the end.
        if done == total || done * 10 / total.max(1) > shown {
            shown = done * 10 / total.max(1);
            eprintln!("re-embedded {done} of {total} memories");
        }
    })
    .await?;
    let tiers: Vec<String> = done
        .per_tier
        .iter()
        .map(|(tier, n)| format!("{tier} {n}"))
        .collect();
    let from = match &done.from {
        Some(m) if m.same(&done.to) && !m.reembedding => "the same model".to_owned(),
        Some(m) => format!("`{}`", m.embedder),
        None => "no recorded model".to_owned(),
    };
    println!(
        "re-embedded {} memories ({}) with `{}`, {} dimensions, from {from}",
        done.records(),
        tiers.join(", "),
        done.to.embedder,
        done.to.dimensions
    );
    Ok(())
}
