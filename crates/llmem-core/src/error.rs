//! The one error type of llmem, shared by every crate and plugin.

use std::time::Duration;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure llmem reports. Each variant carries enough context (which provider, which key,
/// which file) for a user to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something unusable; `message` says what to change.
    #[error("invalid input: {message}")]
    InvalidInput { message: String },

    /// A configuration key has a bad value or is unknown.
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },

    /// Nothing with this name or id exists.
    #[error("not found: {what}")]
    NotFound { what: String },

    /// The plugin does not implement this optional operation.
    #[error("`{by}` does not support {operation}")]
    Unsupported { operation: String, by: String },

    /// A registry has no factory of this name at all.
    #[error("unknown {kind} `{name}`; known: {known}")]
    UnknownPlugin {
        kind: String,
        name: String,
        known: String,
    },

    /// A registry knows this name but the cargo feature that builds it is off.
    #[error(
        "{kind} `{name}` needs the cargo feature `{feature}`, which is not enabled in this build"
    )]
    FeatureDisabled {
        kind: String,
        name: String,
        feature: String,
    },

    /// A remote or local model provider answered with an error.
    #[error("provider `{provider}`{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Provider {
        provider: String,
        status: Option<u16>,
        message: String,
        retry_after: Option<Duration>,
    },

    /// An operation took longer than its limit.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    /// A text, message or prompt does not fit the number of tokens it must fit.
    #[error("{what} needs {needed} tokens but only {limit} fit")]
    TokenLimit {
        what: String,
        needed: usize,
        limit: usize,
    },

    /// A spending or token budget was exhausted and its policy is to refuse.
    #[error("budget exceeded: {message}")]
    BudgetExceeded { message: String },

    /// A storage backend failed.
    #[error("storage `{backend}`: {message}")]
    Storage {
        backend: String,
        message: String,
        temporary: bool,
    },

    /// An I/O error, with the file or operation it concerned.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// JSON or TOML that could not be read or written.
    #[error("{context}: {message}")]
    Serde { context: String, message: String },

    /// Anything else, with its source kept.
    #[error("{context}: {source}")]
    Other {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Bad input, with a message that says what to fix.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
        }
    }

    /// A bad configuration value for `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `by` does not implement `operation`.
    pub fn unsupported(operation: impl Into<String>, by: impl Into<String>) -> Self {
        Error::Unsupported {
            operation: operation.into(),
            by: by.into(),
        }
    }

    /// An I/O error about `context` (a path or an operation).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A storage backend error, final unless `temporary`.
    pub fn storage(backend: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Storage {
            backend: backend.into(),
            message: message.into(),
            temporary: false,
        }
    }

    /// A parse or encode error about `context`.
    pub fn serde(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Serde {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// Whether retrying the same call later may succeed: rate limits, timeouts, 5xx answers,
    /// dropped connections. Everything else is final.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Provider { status, .. } => match status {
                Some(s) => *s == 408 || *s == 409 || *s == 425 || *s == 429 || *s >= 500,
                // No status: the connection broke before an answer.
                None => true,
            },
            Error::Storage { temporary, .. } => *temporary,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// How long the server asked us to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Provider { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::serde("JSON", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_errors_are_told_apart_from_final_ones() {
        let p = |status| Error::Provider {
            provider: "x".into(),
            status,
            message: "m".into(),
            retry_after: None,
        };
        let cases = [
            (p(Some(429)), true),
            (p(Some(500)), true),
            (p(Some(503)), true),
            (p(None), true),
            (p(Some(400)), false),
            (p(Some(401)), false),
            (p(Some(404)), false),
            (
                Error::Timeout {
                    what: "chat".into(),
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (Error::invalid("x"), false),
            (
                Error::io("f", std::io::Error::from(std::io::ErrorKind::NotFound)),
                false,
            ),
            (
                Error::io(
                    "f",
                    std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                ),
                true,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.is_temporary(), want, "{err}");
        }
    }

    #[test]
    fn messages_name_what_to_fix() {
        let e = Error::FeatureDisabled {
            kind: "store".into(),
            name: "cold".into(),
            feature: "lance".into(),
        };
        assert!(e.to_string().contains("feature `lance`"));
        let e = Error::Provider {
            provider: "openai".into(),
            status: Some(401),
            message: "bad key".into(),
            retry_after: None,
        };
        assert_eq!(e.to_string(), "provider `openai` (HTTP 401): bad key");
    }
}
