//! gRPC `EventService.Watch`: replay from a cursor, then follow live events, with heartbeats
//! that carry the cursor. Events are read from the log at the reader's pace (bounded memory);
//! a reader that takes no message for `[limits] watch_stall_secs` is closed with
//! `RESOURCE_EXHAUSTED` naming the cursor to resume from.

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::event_service_server::EventService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::app::events::{EventFilter, cloud_event, parse_cursor};
use crate::error::ApiError;

/// Events queued for one watcher.
pub const WATCH_BUFFER: usize = 256;

/// The gRPC `EventService`.
#[derive(Debug, Clone)]
pub struct EventApi {
    app: Arc<App>,
    /// How long a reader may take no message before it is closed.
    stall: Duration,
}

impl EventApi {
    /// Serves `app`; a reader that takes nothing for `stall` is closed with its resume cursor.
    pub fn new(app: Arc<App>, stall: Duration) -> Self {
        Self { app, stall }
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let org = crate::app::events::event_reader(&self.app, header)?;
        let r = request.into_inner();
        let resource = Some(r.resource_id.as_str())
            .filter(|s| !s.is_empty())
            .map(storage::model::ResourceId::parse)
            .transpose()
            .map_err(|e| Status::from(ApiError::invalid(e.to_string())))?;
        let mut after = parse_cursor(&self.app, &r.after)?;
        let filter = EventFilter { org, resource, types: r.types };
        let heartbeat = Duration::from_secs(u64::from(match r.heartbeat_seconds {
            0 => 15,
            n @ 1..=300 => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "heartbeat_seconds is {n}: use 1–300, or 0 for the default of 15"
                )));
            }
        }));
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        // The closing status comes after every event already queued, so the cursor it names
        // is exactly the last event the reader gets: nothing lost, nothing twice.
        let (close, closed) = mpsc::channel(1);
        let (app, stall) = (self.app.clone(), self.stall);
        self.app.spawn(async move {
            let status = follow(&app, &filter, heartbeat, stall, &mut after, &tx).await;
            drop(tx);
            if let Some(status) = status {
                let _ = close.send(status).await;
            }
        });
        let stream = ReceiverStream::new(rx).chain(ReceiverStream::new(closed).map(Err));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Why a send did not happen.
enum Stop {
    /// The reader went away.
    Left,
    /// The reader took nothing for `watch_stall`.
    Stalled,
}

/// Sends `filter`'s events after `after` (advancing it), then live ones and heartbeats, until
/// the reader leaves (`None`) or the watch must end with a status.
async fn follow(
    app: &App,
    filter: &EventFilter,
    heartbeat: Duration,
    stall: Duration,
    after: &mut u64,
    tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
) -> Option<Status> {
    use pb::watch_response::Message;
    // Replay and live events are both read from the log, so a slow reader costs no memory;
    // one that takes nothing for `watch_stall` is closed so it does not pin a stream forever.
    let send = |message: Message| async move {
        match tokio::time::timeout(stall, tx.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(Ok(pb::WatchResponse { message: Some(message) }));
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Left),
            Err(_) => Err(Stop::Stalled),
        }
    };
    let stalled = |after: u64| {
        Status::resource_exhausted(format!(
            "the watcher took no message for {} s; resume with after=seq:{after}",
            stall.as_secs_f64()
        ))
    };
    let mut changes = app.storage.watch_events();
    loop {
        changes.borrow_and_update();
        // Catch up with everything committed so far.
        loop {
            let batch = match app.storage.events_after(*after, 1024) {
                Ok(batch) => batch,
                Err(e) => return Some(ApiError::internal(e).into()),
            };
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if filter.matches(&e) {
                    match send(Message::Event(to_proto(app, &e))).await {
                        Ok(()) => {}
                        Err(Stop::Left) => return None,
                        Err(Stop::Stalled) => return Some(stalled(*after)),
                    }
                }
                *after = e.seq;
            }
        }
        // Caught up: wait for the next commit, a heartbeat, or shutdown.
        tokio::select! {
            () = app.shutdown.cancelled() => {
                return Some(Status::unavailable(format!(
                    "the server is shutting down; resume with after=seq:{after}"
                )));
            }
            changed = changes.changed() => if changed.is_err() { return None },
            () = tokio::time::sleep(heartbeat) => {
                let cursor = format!("seq:{after}");
                match send(Message::Heartbeat(pb::Heartbeat { cursor })).await {
                    Ok(()) => {}
                    Err(Stop::Left) => return None,
                    Err(Stop::Stalled) => return Some(stalled(*after)),
                }
            }
        }
    }
}

fn to_proto(app: &App, e: &storage::EventRecord) -> pb::BrokerEvent {
    let json = cloud_event(app, e);
    let text = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
    pb::BrokerEvent {
        id: text("id"),
        r#type: text("type"),
        time: text("time"),
        resource: text("resource"),
        resourceinstance: text("resourceinstance"),
        subject: text("subject"),
        source: text("source"),
        role: e.role.name().to_owned(),
        sequence: e.seq,
        cursor: e.id.to_string(),
    }
}
