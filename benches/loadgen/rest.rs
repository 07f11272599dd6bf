//! The REST paths as an Altinn client uses them: a streamed upload body, TUS, and a streamed
//! download, over HTTP/1.1 with reqwest.

use anyhow::{Context, ensure};
use bytes::Bytes;

const BASE: &str = "/broker/api/v1";

/// A REST client for one party.
#[derive(Debug, Clone)]
pub(crate) struct Rest {
    http: reqwest::Client,
    url: String,
    bearer: String,
}

fn body(chunks: Vec<Bytes>) -> reqwest::Body {
    reqwest::Body::wrap_stream(tokio_stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>)))
}

fn size(chunks: &[Bytes]) -> u64 {
    chunks.iter().map(|c| c.len() as u64).sum()
}

impl Rest {
    pub(crate) fn new(url: &str, token: &str) -> Self {
        Self { http: reqwest::Client::new(), url: url.into(), bearer: format!("Bearer {token}") }
    }

    /// `POST /filetransfer/{id}/upload` with the bytes as a streamed body.
    pub(crate) async fn upload(&self, id: &str, chunks: Vec<Bytes>) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}{BASE}/filetransfer/{id}/upload", self.url))
            .header("authorization", &self.bearer)
            .header("content-type", "application/octet-stream")
            .header("content-length", size(&chunks))
            .body(body(chunks))
            .send()
            .await?;
        let status = response.status();
        ensure!(status.is_success(), "REST upload: {status} {}", response.text().await?);
        Ok(())
    }

    /// TUS creation, then the whole file in one PATCH (what tus-js-client does by default).
    pub(crate) async fn tus_upload(&self, id: &str, chunks: Vec<Bytes>) -> anyhow::Result<()> {
        let url = format!("{}{BASE}/filetransfer/upload/tus/{id}", self.url);
        let created = self
            .http
            .post(&url)
            .header("authorization", &self.bearer)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", size(&chunks))
            .send()
            .await?;
        ensure!(created.status() == 201, "TUS creation: {}", created.status());
        let location = created.headers().get("location").and_then(|l| l.to_str().ok());
        let target = match location {
            Some(l) if l.starts_with('/') => format!("{}{l}", self.url),
            Some(l) => l.to_owned(),
            None => url,
        };
        let patched = self
            .http
            .patch(target)
            .header("authorization", &self.bearer)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", 0)
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", size(&chunks))
            .body(body(chunks))
            .send()
            .await?;
        ensure!(patched.status() == 204, "TUS PATCH: {}", patched.status());
        Ok(())
    }

    /// `GET /filetransfer/{id}/download`, read to the end and dropped; the byte count.
    pub(crate) async fn download(&self, id: &str) -> anyhow::Result<u64> {
        let mut response = self
            .http
            .get(format!("{}{BASE}/filetransfer/{id}/download", self.url))
            .header("authorization", &self.bearer)
            .send()
            .await?;
        ensure!(response.status() == 200, "REST download: {}", response.status());
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await.context("REST download body")? {
            received += chunk.len() as u64;
        }
        Ok(received)
    }
}
