//! The render function: `OrderPaid` in; print files and previews stored,
//! recorded on the order's items, and `OrderRendered` (or `OrderOnHold`)
//! written through the outbox.
//!
//! Idempotent by the order's state: only a `paid` order is rendered, and the
//! final write is conditional on the order still being `paid`, so a
//! redelivered or concurrent message neither records nor emits twice. The
//! stored keys are a function of the order, item and image, so a retry
//! after a crash overwrites the same objects.
//!
//! - [`config`]: [`Config`], [`Resources`] and the constructors
//!   [`Renderer::new`] (local runner, tests) and `Renderer::on_aws` (Lambda).

use anyhow::Context;

pub mod config;
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
pub use config::{Config, Ports, Resources};
use printworks::domain::catalog::Catalog;
use printworks::domain::events::{EventEnvelope, EventType};
use printworks::domain::ops;
use printworks::domain::order::{
    ImageSource, ItemImage, Order, OrderItem, RenderedFile, RenderedImage,
};
use printworks::domain::print::{PrintFileKeys, Unprintable};
use printworks::domain::state::OrderState;
use printworks::domain::upload;
use printworks::ports::{BlobStore, Clock, OrderStore, StoreError};
use printworks::render::{self, Limits, Rect, Request, Rgb, Sheet};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// Retrying cannot help (refused address, 404, too large, ...).
    pub permanent: bool,
    pub message: String,
}

/// Photos given as `https` URLs.
#[async_trait]
pub trait UrlSource: Send + Sync {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SourceError>;
}

#[async_trait]
impl UrlSource for printworks::fetch::UrlFetcher {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SourceError> {
        printworks::fetch::UrlFetcher::fetch(self, url)
            .await
            .map_err(|e| SourceError {
                permanent: e.is_permanent(),
                message: e.to_string(),
            })
    }
}

/// What handling one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Rendered {
        images: usize,
    },
    /// The order went on hold; the reason is the customer's.
    Held {
        reason: String,
    },
    /// Nothing to do (not paid any more, unknown order, other event type).
    Skipped(String),
}

/// A failure worth retrying (storage or network trouble).
pub use printworks::retry::Retry;

pub struct Renderer {
    pub catalog: Arc<Catalog>,
    pub orders: Arc<dyn OrderStore>,
    pub uploads: Arc<dyn BlobStore>,
    pub prints: Arc<dyn BlobStore>,
    pub urls: Arc<dyn UrlSource>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// After this many deliveries a customer's photo URL that keeps failing
    /// transiently puts the order on hold instead of being retried again.
    /// Failures of our own stores never count: they are retried until the
    /// queue dead-letters the message (and its alarm calls someone).
    pub max_attempts: u32,
}

enum ImageFailure {
    /// A permanent problem with the image: the order goes on hold.
    Unprintable(Unprintable),
    /// The customer's photo URL failed in a way that may pass (a timeout,
    /// a 503): retried, and after `max_attempts` deliveries the order goes
    /// on hold, since the customer has to give another photo.
    Source(anyhow::Error),
    /// Our side failed (our buckets, the render task): always retried. The
    /// customer cannot fix it, so it must never put their order on hold.
    Ours(anyhow::Error),
}

/// Lost races to write the renders before the message is retried.
const COMMIT_ATTEMPTS: u32 = 5;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Renderer {
    /// Handles one `OrderPaid` (or `OrderResumed` to render again)
    /// delivery; `attempt` counts deliveries from 1.
    pub async fn handle(&self, event: &EventEnvelope, attempt: u32) -> Result<Outcome, Retry> {
        let renders_again = ops::stage_of(event) == Some(ops::Stage::Render);
        if event.event_type != EventType::OrderPaid && !renders_again {
            return Ok(Outcome::Skipped(format!(
                "{} is not rendered",
                event.event_type.as_str()
            )));
        }
        let Some(order) = self
            .orders
            .get(&event.tenant, &event.order_id)
            .await
            .map_err(store)?
        else {
            tracing::warn!(order = %event.order_id, "OrderPaid for an unknown order");
            return Ok(Outcome::Skipped("unknown order".into()));
        };
        // Work of an earlier production attempt is not done (an operator
        // released the order since: that attempt renders).
        if !order.starts_work_of(ops::attempt_of(event)) {
            return Ok(Outcome::Skipped(format!(
                "the order is in attempt {}, the message of attempt {}",
                order.attempt,
                ops::attempt_of(event)
            )));
        }
        if order.state != OrderState::Paid {
            return Ok(Outcome::Skipped(format!(
                "the order is {}",
                order.state.as_str()
            )));
        }
        // An image whose render the order keeps (rendered before a hold,
        // and not replaced since) is not rendered again: its print file is
        // where its key says.
        let mut renders: Vec<Vec<RenderedImage>> = Vec::with_capacity(order.items.len());
        let mut images = 0;
        for item in &order.items {
            let mut item_renders = Vec::with_capacity(item.images.len());
            for (j, image) in item.images.iter().enumerate() {
                if let Some(kept) = item.renders.iter().find(|r| r.image as usize == j) {
                    item_renders.push(kept.clone());
                    continue;
                }
                let failed = match self.render_image(&order, item, j, image).await {
                    Ok(r) => {
                        item_renders.push(r);
                        images += 1;
                        continue;
                    }
                    Err(ImageFailure::Unprintable(u)) => u,
                    Err(ImageFailure::Source(e)) if attempt >= self.max_attempts => {
                        tracing::warn!(order = %order.id, error = %e, attempt, "giving up on a source");
                        Unprintable::SourceUnavailable { attempts: attempt }
                    }
                    Err(ImageFailure::Source(e) | ImageFailure::Ours(e)) => {
                        return Err(Retry(e));
                    }
                };
                renders.push(item_renders);
                return self.hold(&order, renders, item, j, failed).await;
            }
            renders.push(item_renders);
        }
        let now = self.clock.now();
        self.commit(&order, Outcome::Rendered { images }, |fresh| {
            fresh
                .rendered(renders.clone(), now)
                .context("recording the renders")
        })
        .await
    }

    /// Holds the order for image `image` of `item`, keeping the renders
    /// made so far (`done`, by item from the first), so that once the
    /// photo is replaced only what changed is rendered.
    async fn hold(
        &self,
        order: &Order,
        done: Vec<Vec<RenderedImage>>,
        item: &OrderItem,
        image: usize,
        u: Unprintable,
    ) -> Result<Outcome, Retry> {
        let now = self.clock.now();
        let hold = |fresh: &Order| {
            let (mut next, event) = fresh
                .hold_unprintable(item, image, &u, now)
                .context("putting the order on hold")?;
            for (held, renders) in next.items.iter_mut().zip(done.clone()) {
                held.renders = renders;
            }
            Ok((next, event))
        };
        let reason = hold(order)?
            .0
            .hold
            .as_ref()
            .map(|h| h.reason.clone())
            .unwrap_or_default();
        tracing::info!(order = %order.id, code = u.code(), "putting the order on hold");
        self.commit(order, Outcome::Held { reason }, hold).await
    }

    /// Writes what `decide` makes of the order if it is still as read. A
    /// lost race is read again: if the order is still paid, in the same
    /// attempt, with the same photos (a payment flag, a changed e-mail
    /// address, an operator's note moved it on), the work done stands and
    /// is written on the fresh order; otherwise another delivery, a
    /// cancellation or a replaced photo got there first, and that one goes
    /// on.
    async fn commit(
        &self,
        order: &Order,
        done: Outcome,
        decide: impl Fn(&Order) -> anyhow::Result<(Order, EventEnvelope)>,
    ) -> Result<Outcome, Retry> {
        let mut observed = order.clone();
        for _ in 0..COMMIT_ATTEMPTS {
            let (next, event) = decide(&observed)?;
            match self.orders.transition(&next, &observed, vec![event]).await {
                Ok(()) => return Ok(done),
                Err(StoreError::Conflict) => {}
                Err(StoreError::Unexpected(e)) => return Err(Retry(e)),
            }
            let fresh = self
                .orders
                .get(&order.tenant, &order.id)
                .await
                .map_err(store)?;
            let same_work = |fresh: &Order| {
                fresh.state == OrderState::Paid
                    && fresh.attempt == order.attempt
                    && fresh.items.len() == order.items.len()
                    && fresh
                        .items
                        .iter()
                        .zip(&order.items)
                        .all(|(a, b)| a.images == b.images)
            };
            match fresh {
                Some(fresh) if same_work(&fresh) => observed = fresh,
                _ => return Ok(Outcome::Skipped("the order changed while rendering".into())),
            }
        }
        Err(Retry(anyhow::anyhow!(
            "order {} kept changing while its renders were written",
            order.id
        )))
    }

    async fn read_source(&self, order: &Order, image: &ItemImage) -> Result<Vec<u8>, ImageFailure> {
        match &image.source {
            ImageSource::Upload { key, .. } => {
                if !upload::tenant_may_use(&order.tenant, key) {
                    return Err(ImageFailure::Unprintable(Unprintable::ForeignUpload));
                }
                match self.uploads.get(key).await {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => Err(ImageFailure::Unprintable(Unprintable::UploadMissing)),
                    Err(e) => Err(ImageFailure::Ours(anyhow::anyhow!("reading {key}: {e}"))),
                }
            }
            ImageSource::Url { url } => match self.urls.fetch(url).await {
                Ok(bytes) => Ok(bytes),
                Err(e) if e.permanent => Err(ImageFailure::Unprintable(Unprintable::UrlRefused {
                    cause: e.to_string(),
                })),
                Err(e) => Err(ImageFailure::Source(anyhow::anyhow!("fetching {url}: {e}"))),
            },
        }
    }

    async fn render_image(
        &self,
        order: &Order,
        item: &OrderItem,
        j: usize,
        image: &ItemImage,
    ) -> Result<RenderedImage, ImageFailure> {
        let product = self.catalog.product(&item.sku).ok_or_else(|| {
            ImageFailure::Unprintable(Unprintable::UnknownProduct {
                sku: item.sku.clone(),
            })
        })?;
        let product = self.catalog.printed_as(product);
        let bytes = self.read_source(order, image).await?;
        let request = Request {
            sheet: Sheet::for_product(product, &item.options),
            fit: image.fit,
            crop: image.crop.map(|c| Rect {
                x: c.x,
                y: c.y,
                w: c.width,
                h: c.height,
            }),
            background: image
                .background
                .as_deref()
                .and_then(Rgb::parse)
                .unwrap_or(Rgb::WHITE),
            limits: self.limits,
        };
        // Decoding and resampling are CPU work: off the async threads.
        let output = tokio::task::spawn_blocking(move || render::render(&bytes, &request))
            .await
            .map_err(|e| ImageFailure::Ours(anyhow::anyhow!("render task: {e}")))?
            .map_err(|e| {
                if e.is_permanent() {
                    ImageFailure::Unprintable(Unprintable::Image {
                        code: e.code(),
                        message: e.to_string(),
                    })
                } else {
                    ImageFailure::Ours(e.into())
                }
            })?;
        let PrintFileKeys {
            print: print_key,
            preview: preview_key,
        } = PrintFileKeys::of(order, item.line, j);
        let record = RenderedImage {
            image: j as u32,
            print: RenderedFile {
                key: print_key.clone(),
                sha256: sha256_hex(&output.print),
                width: output.print_size.0,
                height: output.print_size.1,
                bytes: output.print.len() as u64,
            },
            preview: RenderedFile {
                key: preview_key.clone(),
                sha256: sha256_hex(&output.preview),
                width: output.preview_size.0,
                height: output.preview_size.1,
                bytes: output.preview.len() as u64,
            },
            effective_dpi: output.effective_dpi,
            warnings: output.warnings,
        };
        let stages: Vec<String> = output
            .timings
            .iter()
            .map(|(s, d)| format!("{s}={}ms", d.as_millis()))
            .collect();
        tracing::info!(order = %order.id, line = item.line, image = j, timings = %stages.join(" "), "rendered");
        let put = |key: String, bytes: Vec<u8>| async move {
            self.prints
                .put(&key, bytes, "image/jpeg")
                .await
                .map_err(|e| ImageFailure::Ours(anyhow::anyhow!("storing {key}: {e}")))
        };
        put(print_key, output.print).await?;
        put(preview_key, output.preview).await?;
        Ok(record)
    }

    /// The Lambda's SQS batch: each record's body is an `OrderPaid` envelope
    /// (raw SNS delivery). Failed records are reported so only they return.
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        printworks::sqs_batch::each_record("render", event, |body, attempt| async move {
            let envelope: EventEnvelope = serde_json::from_str(&body)
                .map_err(|e| anyhow::anyhow!("not an event envelope: {e}"))?;
            self.handle(&envelope, attempt).await.map_err(|e| e.0)
        })
        .await
    }
}

fn store(e: StoreError) -> Retry {
    Retry(anyhow::anyhow!("order store: {e}"))
}

#[cfg(test)]
mod tests;
