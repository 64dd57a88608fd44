//! Layers: wrappers that take an `Arc<dyn ChatModel>` (or `Arc<dyn Embedder>`) and implement the
//! same trait, like tower's `Layer` or opendal's layers. Stack them in any order:
//!
//! ```text
//! let model: Arc<dyn ChatModel> = Arc::new(OpenAi::builder().build()?);
//! let model = Arc::new(RateLimit::new(model, 5.0));           // at most 5 requests/s
//! let model = Arc::new(Timeout::new(model, Duration::from_secs(60)));
//! let model = Arc::new(Retry::new(model, RetryPolicy::default()));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use llmem_core::{
    Capabilities, ChatModel, ChatRequest, ChatResponse, ChatStream, Embedded, Embedder, Error,
    Result,
};

/// How [`Retry`] retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Calls in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Cap on the backoff.
    pub max_delay: Duration,
    /// A server's `retry-after` longer than this is not waited for; the error is returned.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    #[must_use]
    pub fn with_base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    #[must_use]
    pub fn with_max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// The wait before retry number `retry` (0-based) after `err`, or `None` to give up.
    pub fn delay(&self, retry: u32, err: &Error) -> Option<Duration> {
        if !err.is_temporary() || retry + 1 >= self.max_attempts {
            return None;
        }
        if let Some(after) = err.retry_after() {
            return (after <= self.max_retry_after).then_some(after);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        // "Equal jitter": half fixed, half random, so retries from many clients spread out.
        let half = exp / 2;
        Some(half + half.mul_f64(jitter()))
    }
}

/// A number in [0, 1) from a tiny xorshift seeded by the clock; good enough to spread retries.
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Retries temporary failures ([`Error::is_temporary`]) with exponential backoff and jitter,
/// honouring the server's `retry-after`.
#[derive(Debug, Clone)]
pub struct Retry<T: ?Sized> {
    inner: Arc<T>,
    policy: RetryPolicy,
}

impl<T: ?Sized> Retry<T> {
    pub fn new(inner: Arc<T>, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    async fn run<R, F, Fut>(&self, what: &str, by: &str, mut f: F) -> Result<R>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<R>> + Send,
    {
        let mut retry = 0;
        loop {
            match f().await {
                Ok(r) => return Ok(r),
                Err(e) => match self.policy.delay(retry, &e) {
                    Some(wait) => {
                        tracing::warn!(provider = by, operation = what, attempt = retry + 1, ?wait, error = %e, "retrying");
                        tokio::time::sleep(wait).await;
                        retry += 1;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

#[async_trait]
impl<T: ChatModel + ?Sized> ChatModel for Retry<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.run("chat", self.inner.name(), || {
            self.inner.chat(request.clone())
        })
        .await
    }
    /// Retries opening the stream; a stream that fails midway is not replayed.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        self.run("chat_stream", self.inner.name(), || {
            self.inner.chat_stream(request.clone())
        })
        .await
    }
    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        self.run("count_tokens", self.inner.name(), || {
            self.inner.count_tokens(request)
        })
        .await
    }
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for Retry<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.run("embed", self.inner.name(), || self.inner.embed(texts))
            .await
    }
    async fn embed_with_tokens(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        self.run("embed", self.inner.name(), || {
            self.inner.embed_with_tokens(texts)
        })
        .await
    }
}

/// A token bucket: `rate` requests per second on average, bursts up to `burst`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    /// Takes a token, waiting for it when the bucket is empty. Waiters are served in order:
    /// each reserves its token (the level may go negative) and sleeps until it is paid back.
    async fn acquire(&self) {
        let wait = {
            let mut st = self.state.lock().await;
            let now = Instant::now();
            let (tokens, last) = *st;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - 1.0;
            *st = (tokens, now);
            if tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-tokens / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Limits the request rate with a token bucket (requests per second, with a burst).
#[derive(Debug, Clone)]
pub struct RateLimit<T: ?Sized> {
    inner: Arc<T>,
    bucket: Arc<Bucket>,
}

impl<T: ?Sized> RateLimit<T> {
    /// `per_second` requests per second, bursts of one.
    pub fn new(inner: Arc<T>, per_second: f64) -> Self {
        Self::with_burst(inner, per_second, 1)
    }

    /// `per_second` on average, up to `burst` at once after a quiet spell.
    pub fn with_burst(inner: Arc<T>, per_second: f64, burst: u32) -> Self {
        let rate = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            f64::MAX
        };
        let burst = f64::from(burst.max(1));
        let bucket = Bucket {
            rate,
            burst,
            state: tokio::sync::Mutex::new((burst, Instant::now())),
        };
        RateLimit {
            inner,
            bucket: Arc::new(bucket),
        }
    }
}

#[async_trait]
impl<T: ChatModel + ?Sized> ChatModel for RateLimit<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.bucket.acquire().await;
        self.inner.chat(request).await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        self.bucket.acquire().await;
        self.inner.chat_stream(request).await
    }
    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        self.bucket.acquire().await;
        self.inner.count_tokens(request).await
    }
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for RateLimit<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.bucket.acquire().await;
        self.inner.embed(texts).await
    }
    async fn embed_with_tokens(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        self.bucket.acquire().await;
        self.inner.embed_with_tokens(texts).await
    }
}

/// Fails calls that take longer than a limit with [`Error::Timeout`] (a temporary error, so a
/// [`Retry`] outside it retries). For streams the limit applies to opening the stream and to
/// each wait for the next chunk.
#[derive(Debug, Clone)]
pub struct Timeout<T: ?Sized> {
    inner: Arc<T>,
    after: Duration,
}

impl<T: ?Sized> Timeout<T> {
    pub fn new(inner: Arc<T>, after: Duration) -> Self {
        Timeout { inner, after }
    }

    async fn limit<R>(
        &self,
        what: String,
        fut: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        match tokio::time::timeout(self.after, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what,
                after: self.after,
            }),
        }
    }
}

#[async_trait]
impl<T: ChatModel + ?Sized> ChatModel for Timeout<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.limit(
            format!("{} chat", self.inner.name()),
            self.inner.chat(request),
        )
        .await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let what = format!("{} chat stream", self.inner.name());
        let stream = self
            .limit(what.clone(), self.inner.chat_stream(request))
            .await?;
        let after = self.after;
        let s = futures::stream::unfold(Some(stream), move |st| {
            let what = what.clone();
            async move {
                let mut stream = st?;
                match tokio::time::timeout(after, stream.next()).await {
                    Ok(Some(item)) => Some((item, Some(stream))),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(Error::Timeout {
                            what: format!("{what} (waiting for the next chunk)"),
                            after,
                        }),
                        None,
                    )),
                }
            }
        });
        Ok(Box::pin(s))
    }
    async fn count_tokens(&self, request: &ChatRequest) -> Result<usize> {
        self.limit(
            format!("{} count_tokens", self.inner.name()),
            self.inner.count_tokens(request),
        )
        .await
    }
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for Timeout<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.limit(
            format!("{} embed", self.inner.name()),
            self.inner.embed(texts),
        )
        .await
    }
    async fn embed_with_tokens(&self, texts: &[String]) -> Result<Vec<Embedded>> {
        self.limit(
            format!("{} embed", self.inner.name()),
            self.inner.embed_with_tokens(texts),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let p = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(100))
            .with_max_attempts(5);
        let temp = Error::Timeout {
            what: "x".into(),
            after: Duration::from_secs(1),
        };
        for retry in 0..4 {
            let d = p.delay(retry, &temp).unwrap();
            let full = Duration::from_millis(100 * (1 << retry));
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
        assert_eq!(p.delay(4, &temp), None, "attempts are capped");
        let limited = Error::Provider {
            provider: "p".into(),
            status: Some(429),
            message: "m".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(p.delay(0, &limited), Some(Duration::from_secs(7)));
        let fatal = Error::Provider {
            provider: "p".into(),
            status: Some(401),
            message: "m".into(),
            retry_after: None,
        };
        assert_eq!(p.delay(0, &fatal), None, "final errors are not retried");
    }
}
