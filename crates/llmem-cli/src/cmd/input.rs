//! Reading the files the commands take: text with UTF-8 checked, and JSONL transcripts.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use llmem::Message;

/// Reads `path` (`-` for stdin) as UTF-8 text; invalid UTF-8 is an error naming the byte offset.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?
    };
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            bail!(
                "`{}` is not valid UTF-8 (first bad byte at offset {at}); convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`",
                path.display()
            )
        }
    }
}

/// Parses a chat transcript: one OpenAI-shaped message object per line (blank lines skipped),
/// or one JSON array of messages.
pub fn parse_transcript(text: &str, origin: &Path) -> Result<Vec<Message>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).with_context(|| {
            format!(
                "`{}`: expected a JSON array of chat messages",
                origin.display()
            )
        });
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let m: Message = serde_json::from_str(line).with_context(|| {
            format!(
                "`{}` line {}: expected a chat message like {{\"role\":\"user\",\"content\":\"…\"}}",
                origin.display(),
                i + 1
            )
        })?;
        out.push(m);
    }
    Ok(out)
}

/// Reads and parses a transcript file.
pub fn read_transcript(path: &Path) -> Result<Vec<Message>> {
    let text = read_text(path)?;
    parse_transcript(&text, path)
}
