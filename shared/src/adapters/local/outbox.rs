//! The local mail and SMS "provider": every e-mail becomes an `.eml` file
//! (the exact MIME message SES or SMTP would carry; any mail client opens
//! it) and every text message a `.sms.json` file, under one outbox folder
//! (`./var/outbox` for `printworks up`). A file is written under a dot-name,
//! fsynced and renamed, so a reader never sees half a message; its name is
//! the notification's id, so a repeated send replaces it instead of adding
//! a second. Every send also appends the file's name to `sent.log`, as a
//! provider's send log: a message sent twice shows there twice.

use crate::ports::{Clock, EmailMessage, Mailer, SendError, SmsMessage, SmsSender};
use anyhow::Context;
use async_trait::async_trait;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The send log's file name in the outbox folder.
pub const SENT_LOG: &str = "sent.log";

#[derive(Clone)]
pub struct OutboxFolder {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
}

impl OutboxFolder {
    pub fn open(dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> anyhow::Result<OutboxFolder> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(OutboxFolder { dir, clock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every send so far, one file name per send, in the order sent.
    pub fn sent_log(&self) -> std::io::Result<Vec<String>> {
        match std::fs::read_to_string(self.dir.join(SENT_LOG)) {
            Ok(text) => Ok(text.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The `.eml` files, by name.
    pub fn emails(&self) -> std::io::Result<Vec<PathBuf>> {
        self.files(".eml")
    }

    /// The `.sms.json` files, by name.
    pub fn texts(&self) -> std::io::Result<Vec<PathBuf>> {
        self.files(".sms.json")
    }

    fn files(&self, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(suffix) && !name.starts_with('.') {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn write(&self, name: String, bytes: Vec<u8>) -> Result<String, SendError> {
        let dir = self.dir.clone();
        let written = name.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, dir.join(&name))?;
            std::fs::File::open(&dir)?.sync_all()?;
            // One write of one short line with O_APPEND: concurrent sends
            // never interleave their lines.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(SENT_LOG))?
                .write_all(format!("{name}\n").as_bytes())?;
            Ok(())
        })
        .await
        .map_err(|e| SendError::Unavailable(e.into()))?
        .map_err(SendError::Unavailable)?;
        Ok(written)
    }
}

/// A file name from an id: only `[A-Za-z0-9_-]`, never a dot-file.
fn file_stem(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if stem.is_empty() {
        "message".into()
    } else {
        stem
    }
}

#[async_trait]
impl Mailer for OutboxFolder {
    async fn send(&self, mail: &EmailMessage) -> Result<String, SendError> {
        let mime = mail
            .to_mime(self.clock.now())
            .map_err(|e| SendError::Rejected(e.to_string()))?;
        let local = mail.message_id.split('@').next().unwrap_or_default();
        self.write(format!("{}.eml", file_stem(local)), mime).await
    }
}

#[async_trait]
impl SmsSender for OutboxFolder {
    async fn send(&self, sms: &SmsMessage) -> Result<String, SendError> {
        let body = serde_json::to_vec_pretty(sms).map_err(|e| SendError::Unavailable(e.into()))?;
        self.write(format!("{}.sms.json", file_stem(&sms.id)), body)
            .await
    }
}
