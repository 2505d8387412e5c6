//! Tenant webhooks out: [`HttpWebhooks`] POSTs a signed event to a B2B
//! tenant's endpoint through the SSRF-safe [`UrlFetcher`], so a tenant URL
//! that names (or resolves to) a private, loopback, link-local or metadata
//! address is refused, whichever way it is spelled.

use crate::domain::notify::WEBHOOK_SIGNATURE_HEADER;
use crate::fetch::{FetchError, UrlFetcher};
use crate::ports::{SendError, WebhookSender};
use async_trait::async_trait;

#[derive(Clone)]
pub struct HttpWebhooks {
    fetcher: UrlFetcher,
}

impl HttpWebhooks {
    pub fn new(fetcher: UrlFetcher) -> HttpWebhooks {
        HttpWebhooks { fetcher }
    }
}

#[async_trait]
impl WebhookSender for HttpWebhooks {
    async fn post(&self, url: &str, signature: &str, body: &str) -> Result<String, SendError> {
        let headers = [
            (WEBHOOK_SIGNATURE_HEADER, signature),
            ("User-Agent", "printworks-webhooks/1"),
        ];
        match self.fetcher.post_json(url, &headers, body).await {
            Ok(status) if (200..300).contains(&status) => Ok(format!("HTTP {status}")),
            // Every other answer is retried (the tenant may fix the endpoint);
            // the queue backs off and dead-letters after its limit.
            Ok(status) => Err(SendError::Unavailable(anyhow::anyhow!(
                "the endpoint answered HTTP {status}"
            ))),
            Err(
                e @ (FetchError::NotHttps | FetchError::BadUrl(_) | FetchError::Refused { .. }),
            ) => Err(SendError::Rejected(e.to_string())),
            Err(e) => Err(SendError::Unavailable(e.into())),
        }
    }
}
