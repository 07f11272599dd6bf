//! The receiving agent behind `ferry receive`: a recipient's side of a transfer, done robustly.
//!
//! 1. Reconcile: search for published transfers this party has not confirmed.
//! 2. Follow: the gRPC watch stream's `published` events (from a cursor kept in the output
//!    directory, so a restart continues where it stopped).
//! 3. For each transfer: download with resume into a `.part` file, verify its BLAKE3, rename it
//!    into place (atomic), then confirm. A transfer whose file is already there is only
//!    confirmed: redelivered events and restarts are no-ops (confirming twice is too).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use proto::v1 as pb;

use crate::Client;

/// Where the agent keeps its stream cursor, inside the output directory.
pub const CURSOR_FILE: &str = ".ferry-receive-cursor";

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Files written (new downloads).
    pub downloaded: Vec<PathBuf>,
    /// Transfers confirmed (new downloads and ones found complete on disk).
    pub confirmed: usize,
}

/// Makes the progress callback of one download from the transfer's file name and size; the
/// callback hears how many bytes are here and is dropped when the download ends.
pub type ProgressFactory = Arc<dyn Fn(&str, u64) -> Box<dyn FnMut(u64) + Send> + Send + Sync>;

/// The agent for one resource and output directory.
#[derive(Clone)]
pub struct Receiver {
    client: Client,
    resource: String,
    out: PathBuf,
    progress: Option<ProgressFactory>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("client", &self.client)
            .field("resource", &self.resource)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// An agent that writes `resource`'s transfers into `out`.
    pub fn new(
        client: Client,
        resource: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> anyhow::Result<Self> {
        let out = out.into();
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        Ok(Self { client, resource: resource.into(), out, progress: None })
    }

    /// Reports each download's progress through a callback `progress` makes for it.
    pub fn with_progress(
        mut self,
        progress: impl Fn(&str, u64) -> Box<dyn FnMut(u64) + Send> + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Where a transfer's file goes: `{id}-{file name}`, the name stripped of path parts.
    pub fn destination(&self, id: &str, file_name: &str) -> PathBuf {
        let name: String = Path::new(file_name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        self.out.join(format!("{id}-{}", if name.is_empty() { "file" } else { &name }))
    }

    /// Receives one transfer (idempotent).
    pub async fn receive(&self, id: &str, done: &mut Received) -> anyhow::Result<()> {
        let overview =
            self.client.overview(id).await.map_err(|s| anyhow::anyhow!(crate::describe(&s)))?;
        let published = [
            pb::FileTransferStatus::Published as i32,
            pb::FileTransferStatus::AllConfirmedDownloaded as i32,
        ];
        if !published.contains(&overview.file_transfer_status) {
            return Ok(());
        }
        let path = self.destination(id, &overview.file_name);
        if !path.exists() {
            let mut progress = match &self.progress {
                Some(make) => make(&overview.file_name, overview.file_transfer_size),
                None => Box::new(|_| {}),
            };
            self.client.download_file_with_progress(id, &path, &mut *progress).await?;
            done.downloaded.push(path);
        }
        self.client.confirm(id).await.map_err(|s| anyhow::anyhow!(crate::describe(&s)))?;
        done.confirmed += 1;
        Ok(())
    }

    /// Receives every published transfer not yet confirmed (all search pages).
    pub async fn reconcile(&self) -> anyhow::Result<Received> {
        let mut done = Received::default();
        for recipient_status in [
            pb::RecipientFileTransferStatus::Initialized,
            pb::RecipientFileTransferStatus::DownloadStarted,
        ] {
            let mut page_token = String::new();
            loop {
                let page = self
                    .client
                    .search(pb::SearchFileTransfersRequest {
                        resource_id: self.resource.clone(),
                        status: Some(pb::FileTransferStatus::Published as i32),
                        recipient_status: Some(recipient_status as i32),
                        order_ascending: true,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!(crate::describe(&s)))?;
                for id in &page.file_transfer_ids {
                    self.receive(id, &mut done).await?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Ok(done)
    }

    fn cursor(&self) -> String {
        std::fs::read_to_string(self.out.join(CURSOR_FILE))
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|_| "0".into())
    }

    fn save_cursor(&self, cursor: &str) -> anyhow::Result<()> {
        let tmp = self.out.join(format!("{CURSOR_FILE}.tmp"));
        std::fs::write(&tmp, cursor)?;
        std::fs::rename(tmp, self.out.join(CURSOR_FILE))?;
        Ok(())
    }

    /// Reconciles, then follows published events until the stream ends; reconnects (and
    /// reconciles again) after connection trouble. `on_received` hears of each new file.
    pub async fn run(&self, mut on_received: impl FnMut(&Path)) -> anyhow::Result<()> {
        loop {
            for path in self.reconcile().await?.downloaded {
                on_received(&path);
            }
            let request = pb::WatchRequest {
                after: self.cursor(),
                resource_id: self.resource.clone(),
                types: vec!["no.altinn.broker.published".into()],
                heartbeat_seconds: 30,
            };
            let mut stream = match self.client.watch(request).await {
                Ok(stream) => stream,
                // A cursor the server no longer knows: start over; reconcile covers the gap.
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    self.save_cursor("0")?;
                    continue;
                }
                Err(s) if crate::is_retryable(&s) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(s) => anyhow::bail!(crate::describe(&s)),
            };
            loop {
                match stream.message().await {
                    Ok(Some(message)) => match message.message {
                        Some(pb::watch_response::Message::Event(e)) => {
                            let mut done = Received::default();
                            self.receive(&e.resourceinstance, &mut done).await?;
                            self.save_cursor(&e.cursor)?;
                            for path in done.downloaded {
                                on_received(&path);
                            }
                        }
                        Some(pb::watch_response::Message::Heartbeat(beat)) => {
                            self.save_cursor(&beat.cursor)?
                        }
                        None => {}
                    },
                    Ok(None) => break,
                    Err(s) => {
                        tracing::info!(status = %s, "event stream interrupted; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    }
}
