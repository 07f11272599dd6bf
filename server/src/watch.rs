//! gRPC `EventService.Watch`: replay from a cursor, then follow live events, with heartbeats
//! that carry the cursor. A reader that cannot keep up (its buffer is full) is closed with
//! `RESOURCE_EXHAUSTED` naming the cursor to resume from, instead of holding events in memory.

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::event_service_server::EventService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::auth::{SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_WRITE};
use crate::error::ApiError;
use crate::events::{EventFilter, cloud_event, parse_cursor};

/// Events buffered for one watcher before it counts as too slow.
pub const WATCH_BUFFER: usize = 256;

/// The gRPC `EventService`.
#[derive(Debug, Clone)]
pub struct EventApi {
    app: Arc<App>,
}

impl EventApi {
    /// Serves `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let caller = self
            .app
            .auth
            .authenticate(header)
            .map_err(|e| Status::from(ApiError::unauthenticated(e.to_string())))?;
        let scopes = [SCOPE_READ, SCOPE_WRITE, SCOPE_SERVICE_OWNER];
        if !caller.has_any_scope(&scopes) {
            return Err(ApiError::missing_scope(&scopes).into());
        }
        let org = caller.org.clone().ok_or_else(|| Status::from(ApiError::altinn(7001)))?;
        let r = request.into_inner();
        let resource = Some(r.resource_id.as_str())
            .filter(|s| !s.is_empty())
            .map(storage::model::ResourceId::parse)
            .transpose()
            .map_err(|e| Status::from(ApiError::invalid(e.to_string())))?;
        let mut after = parse_cursor(&self.app, &r.after)?;
        let filter = EventFilter { org, resource, types: r.types };
        let heartbeat = Duration::from_secs(u64::from(if r.heartbeat_seconds == 0 {
            15
        } else {
            r.heartbeat_seconds.clamp(1, 300)
        }));
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let app = self.app.clone();
        self.app.spawn(async move {
            let mut changes = app.storage.watch_events();
            loop {
                changes.borrow_and_update();
                // Catch up with everything committed so far.
                loop {
                    let batch = match app.storage.events_after(after, 1024) {
                        Ok(batch) => batch,
                        Err(e) => {
                            let _ = tx.send(Err(ApiError::internal(e).into())).await;
                            return;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for e in batch {
                        let seq = e.seq;
                        if filter.matches(&e) {
                            let event = to_proto(&app, &e);
                            let message = Ok(pb::WatchResponse { message: Some(pb::watch_response::Message::Event(event)) });
                            match tx.try_send(message) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    // Too slow: close with where to resume (the last event sent).
                                    let status = Status::resource_exhausted(format!(
                                        "the watcher fell {WATCH_BUFFER} events behind; resume with after=seq:{after}"
                                    ));
                                    let _ = tx.send(Err(status)).await;
                                    return;
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                        after = seq;
                    }
                }
                // Caught up: wait for the next commit, a heartbeat, or shutdown.
                tokio::select! {
                    () = app.shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable(format!("the server is shutting down; resume with after=seq:{after}")))).await;
                        return;
                    }
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(heartbeat) => {
                        let beat = pb::WatchResponse { message: Some(pb::watch_response::Message::Heartbeat(pb::Heartbeat { cursor: format!("seq:{after}") })) };
                        if tx.send(Ok(beat)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
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
