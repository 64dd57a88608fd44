//! Where local assets (the ONNX Runtime library, models) live, and the error that says how to
//! get them.
//!
//! Order: an explicit path from config, else `$LLMEM_CACHE_DIR`, else `$XDG_CACHE_HOME/llmem`,
//! else `~/.cache/llmem`.

use std::path::{Path, PathBuf};

use llmem_core::{Error, Result};

/// The command that installs every local asset.
pub const SETUP_COMMAND: &str = "cargo xtask setup";

/// The llmem cache directory (it may not exist yet).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLMEM_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("llmem");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("llmem")
}

/// `explicit` if given, else `relative` under [`cache_dir`]; an error naming [`SETUP_COMMAND`]
/// when the file is missing.
pub fn resolve(what: &str, explicit: Option<&Path>, relative: &str) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => cache_dir().join(relative),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(missing(what, &path))
    }
}

/// The error for a missing asset: what, where it was looked for, and the command to run.
pub fn missing(what: &str, path: &Path) -> Error {
    Error::NotFound {
        what: format!(
            "{what} at {} (run `{SETUP_COMMAND}` to install the local models and the ONNX Runtime library, \
             or set LLMEM_CACHE_DIR to the directory that holds them)",
            path.display()
        ),
    }
}

/// The ONNX Runtime shared library: `explicit`, else `$ORT_DYLIB_PATH`, else
/// `<cache>/lib/libonnxruntime.so`.
pub fn onnxruntime_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let (None, Some(p)) = (
        explicit,
        std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()),
    ) {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(missing("the ONNX Runtime library (ORT_DYLIB_PATH)", &p))
        };
    }
    let name = if cfg!(target_os = "macos") {
        "lib/libonnxruntime.dylib"
    } else if cfg!(windows) {
        "lib/onnxruntime.dll"
    } else {
        "lib/libonnxruntime.so"
    };
    resolve("the ONNX Runtime library", explicit, name)
}
