//! The CUDA check `cargo xtask gpu` runs (it installs the GPU build of ONNX Runtime and its
//! CUDA libraries first, and sets `ORT_DYLIB_PATH` and `LD_LIBRARY_PATH`):
//!
//! 1. The MiniLM embedder and the hot tier's scorer ([`OnnxScorer`], 100,000 × 384) are built
//!    on the CPU and on the CUDA execution provider (`Device::Cuda`: an error, not a fallback,
//!    when CUDA cannot be registered).
//! 2. A profiled run of each on CUDA shows which execution provider ran each node; the check
//!    fails unless every matrix product ran on CUDA and most of the node time was there.
//! 3. The results must agree with the CPU's (cosine of the embeddings, scores).
//! 4. Throughput at batch 1 and 256, CPU against CUDA, in the same run.
//!
//! `cargo run -p llmem-providers --features cuda --example gpu_check`; exits 1 when a check fails.
//! With `--dry-run-on-cpu` the "CUDA" side runs on the CPU: every step runs and the provider
//! check fails, as it must (a way to see the check work on a machine without a GPU).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Instant;

use llmem_core::{Result, VectorScorer};
use llmem_providers::onnx::{Device, OnnxEmbedder, OnnxScorer, ProfileSummary};

const CUDA: &str = "CUDAExecutionProvider";
/// Operators that carry the models' arithmetic: they must run on the GPU.
const PRODUCTS: &[&str] = &["MatMul", "MatMulInteger", "Gemm", "FusedMatMul"];

fn sentences(n: usize) -> Vec<String> {
    const WHO: &[&str] = &[
        "Caroline",
        "Melanie",
        "my brother",
        "the new manager",
        "our team",
    ];
    const DID: &[&str] = &[
        "went hiking near the lake",
        "signed up for a pottery class",
        "talked about adopting a dog",
        "moved the launch to next quarter",
        "painted a sunrise over the bay",
    ];
    const WHEN: &[&str] = &[
        "last weekend",
        "on 7 May 2023",
        "after the support group",
        "yesterday",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {}, and said it was worth the effort ({i}).",
                WHO[i % WHO.len()],
                DID[(i / 5) % DID.len()],
                WHEN[(i / 25) % WHEN.len()]
            )
        })
        .collect()
}

/// Items per second of `f`, run `runs` times on `batch` items after one warm-up run.
fn rate(batch: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t = Instant::now();
    for _ in 0..runs {
        f()?;
    }
    Ok((batch * runs) as f64 / t.elapsed().as_secs_f64())
}

/// Prints a profile and says whether CUDA ran the products and most of the time.
fn judge(what: &str, p: &ProfileSummary) -> bool {
    println!("{what}: nodes and time by execution provider");
    for (provider, (nodes, us)) in &p.by_provider {
        let ops: Vec<&str> = p.ops[provider].iter().map(String::as_str).collect();
        println!(
            "  {provider}: {nodes} node runs, {us} µs; ops {}",
            ops.join(", ")
        );
    }
    let off_gpu: Vec<String> = p
        .ops
        .iter()
        .filter(|(provider, _)| provider.as_str() != CUDA)
        .flat_map(|(provider, ops)| {
            ops.iter()
                .filter(|o| PRODUCTS.contains(&o.as_str()))
                .map(move |o| format!("{o} on {provider}"))
        })
        .collect();
    let share = p.time_share(CUDA);
    println!("  CUDA share of node time: {:.1}%", share * 100.0);
    let ok = share >= 0.5 && off_gpu.is_empty() && p.by_provider.contains_key(CUDA);
    if !ok {
        println!("  FAIL: the provider that ran {what} is not CUDA ({off_gpu:?})");
    }
    ok
}

fn embedder(device: Device, profile: Option<&std::path::Path>) -> Result<OnnxEmbedder> {
    let mut b = OnnxEmbedder::builder()
        .with_device(device)
        .with_batch_size(256);
    if let Some(p) = profile {
        b = b.with_profiling(p);
    }
    b.build()
}

fn check(accelerated: Device) -> Result<bool> {
    let dir = tempfile::tempdir().map_err(|e| llmem_core::Error::invalid(e.to_string()))?;
    let mut ok = true;

    // The embedder.
    let texts = sentences(256);
    let cpu = embedder(Device::Cpu, None)?;
    let gpu = embedder(accelerated, None)?;
    println!(
        "embedder sessions: {} and {}",
        cpu.provider(),
        gpu.provider()
    );
    let profiled = embedder(accelerated, Some(&dir.path().join("embed")))?;
    profiled.embed_blocking(&texts[..32])?;
    ok &= judge(
        "the embedder",
        &ProfileSummary::read(&profiled.end_profiling()?)?,
    );
    let (a, b) = (cpu.embed_blocking(&texts)?, gpu.embed_blocking(&texts)?);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
        .fold(1.0f32, f32::min);
    println!("embeddings: lowest CPU·CUDA cosine over 256 sentences {worst:.5}");
    if worst < 0.99 {
        println!("  FAIL: CUDA's embeddings differ from the CPU's");
        ok = false;
    }
    let one = texts[..1].to_vec();
    let mut rows = Vec::new();
    for (role, e) in [("reference", &cpu), ("accelerated", &gpu)] {
        let name = format!("{role}: {}", e.provider());
        let b1 = rate(1, 50, || e.embed_blocking(&one).map(drop))?;
        let b256 = rate(256, 4, || e.embed_blocking(&texts).map(drop))?;
        rows.push(("embeddings/s", name, b1, b256));
    }

    // The hot tier's scorer.
    let (n, dim) = (100_000usize, 384usize);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let matrix: Vec<f32> = (0..n * dim).map(|_| next()).collect();
    let queries: Vec<f32> = (0..256 * dim).map(|_| next()).collect();
    let cpu_s = OnnxScorer::new(None)?.device(Device::Cpu);
    let gpu_s = OnnxScorer::new(None)?.device(accelerated);
    cpu_s.load(&matrix, dim)?;
    gpu_s.load(&matrix, dim)?;
    println!(
        "scorer sessions: {} and {}",
        cpu_s.provider().unwrap_or("none"),
        gpu_s.provider().unwrap_or("none")
    );
    let prof_s = OnnxScorer::new(None)?
        .device(accelerated)
        .profiling(dir.path().join("score"));
    prof_s.load(&matrix, dim)?;
    prof_s.score_many(&queries)?;
    ok &= judge(
        "the scorer",
        &ProfileSummary::read(&prof_s.end_profiling()?)?,
    );
    let (sa, sb) = (cpu_s.score_many(&queries)?, gpu_s.score_many(&queries)?);
    let diff = sa
        .iter()
        .zip(&sb)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    println!("scores: largest |CPU − CUDA| over 256 × {n} scores {diff:.2e}");
    if diff > 1e-2 {
        println!("  FAIL: CUDA's scores differ from the CPU's");
        ok = false;
    }
    let q1 = queries[..dim].to_vec();
    for (role, s) in [("reference", &cpu_s), ("accelerated", &gpu_s)] {
        let name = format!("{role}: {}", s.provider().unwrap_or("none"));
        let b1 = rate(1, 50, || s.score(&q1).map(drop))?;
        let b256 = rate(256, 4, || s.score_many(&queries).map(drop))?;
        rows.push(("queries/s (100k rows each)", name, b1, b256));
    }

    println!("\n| what | session: provider | batch 1 | batch 256 |\n|---|---|---:|---:|");
    for (what, name, b1, b256) in &rows {
        println!("| {what} | {name} | {b1:.1} | {b256:.1} |");
    }
    Ok(ok)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let accelerated = match std::env::args().nth(1).as_deref() {
        None => Device::Cuda,
        Some("--dry-run-on-cpu") => Device::Cpu,
        Some(other) => {
            eprintln!("gpu check: unknown argument `{other}` (only --dry-run-on-cpu)");
            return ExitCode::FAILURE;
        }
    };
    match check(accelerated) {
        Ok(true) => {
            println!("gpu check: passed");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("gpu check: FAILED (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gpu check: {e}");
            ExitCode::FAILURE
        }
    }
}
