//! What the `ferry` CLI prints: human output for people on a terminal, JSON for programs.
//!
//! JSON uses Altinn's camelCase names and status names (`fileTransferStatus: "Published"`), the
//! same vocabulary as the REST API, so a script can move between `curl` and `ferry` without a
//! second dictionary. Times are RFC 3339: UTC in JSON (stable across machines), the local
//! offset in human output. The shapes are documented in the README and checked by tests.
//!
//! Exit codes ([`exit_code`]): 0 success, 1 the operation failed (e.g. `send --wait` saw the
//! transfer fail), 2 usage, 3 not found, 4 not allowed (unauthenticated or denied), 5 the
//! server or network failed, 6 verification failed (a downloaded file's digest differs).

use client::v1 as pb;
use serde_json::{Value, json};

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned, for people.
    Human,
    /// One JSON document on stdout.
    Json,
}

/// Exit code: the operation failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the command line was wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: no such transfer, resource or service owner (or not one the caller may see).
pub const EXIT_NOT_FOUND: i32 = 3;
/// Exit code: no or a bad token, or not allowed.
pub const EXIT_DENIED: i32 = 4;
/// Exit code: the server failed or could not be reached.
pub const EXIT_SERVER: i32 = 5;
/// Exit code: a downloaded file did not verify.
pub const EXIT_VERIFICATION: i32 = 6;

/// The exit code for an error, from the gRPC status it carries, if any.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    use tonic::Code;
    if let Some(status) = error.chain().find_map(|e| e.downcast_ref::<tonic::Status>()) {
        return match status.code() {
            Code::NotFound => EXIT_NOT_FOUND,
            Code::Unauthenticated | Code::PermissionDenied => EXIT_DENIED,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => EXIT_USAGE,
            Code::DataLoss => EXIT_VERIFICATION,
            _ => EXIT_SERVER,
        };
    }
    let text = format!("{error:#}");
    if text.contains("BLAKE3") || text.contains("verif") { EXIT_VERIFICATION } else { EXIT_FAILED }
}

/// `1.5 MiB`: binary units, one decimal above a KiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A protobuf time as RFC 3339 in `zone` (seconds), or "" when unset.
pub fn time(t: Option<&prost_types::Timestamp>, zone: &jiff::tz::TimeZone) -> String {
    let Some(t) = t else { return String::new() };
    match jiff::Timestamp::new(t.seconds, 0) {
        Ok(ts) => ts.to_zoned(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        Err(_) => String::new(),
    }
}

fn utc(t: Option<&prost_types::Timestamp>) -> Value {
    match t.map(|t| time(Some(t), &jiff::tz::TimeZone::UTC)) {
        Some(text) if !text.is_empty() => Value::String(text),
        _ => Value::Null,
    }
}

/// `FILE_TRANSFER_STATUS_ALL_CONFIRMED_DOWNLOADED` → `AllConfirmedDownloaded` (Altinn's name).
fn altinn_name(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect()
}

/// Altinn's name of a transfer status.
pub fn status_name(status: i32) -> String {
    let status = pb::FileTransferStatus::try_from(status).unwrap_or_default();
    altinn_name(status.as_str_name(), "FILE_TRANSFER_STATUS_")
}

/// Altinn's name of a recipient status.
pub fn recipient_status_name(status: i32) -> String {
    let status = pb::RecipientFileTransferStatus::try_from(status).unwrap_or_default();
    altinn_name(status.as_str_name(), "RECIPIENT_FILE_TRANSFER_STATUS_")
}

/// Aligned `key: value` lines.
fn lines(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// A transfer's overview as JSON.
pub fn overview_json(o: &pb::FileTransferOverview) -> Value {
    let recipients: Vec<Value> = o
        .recipients
        .iter()
        .map(|r| {
            json!({
                "recipient": r.recipient,
                "currentRecipientFileTransferStatusCode":
                    recipient_status_name(r.current_recipient_file_transfer_status_code),
                "currentRecipientFileTransferStatusText": r.current_recipient_file_transfer_status_text,
                "currentRecipientFileTransferStatusChanged":
                    utc(r.current_recipient_file_transfer_status_changed.as_ref()),
            })
        })
        .collect();
    json!({
        "fileTransferId": o.file_transfer_id,
        "resourceId": o.resource_id,
        "fileName": o.file_name,
        "sendersFileTransferReference": o.senders_file_transfer_reference,
        "fileTransferSize": o.file_transfer_size,
        "checksum": o.checksum,
        "blake3": o.blake3,
        "useVirusScan": o.use_virus_scan,
        "fileTransferStatus": status_name(o.file_transfer_status),
        "fileTransferStatusText": o.file_transfer_status_text,
        "fileTransferStatusChanged": utc(o.file_transfer_status_changed.as_ref()),
        "created": utc(o.created.as_ref()),
        "expirationTime": utc(o.expiration_time.as_ref()),
        "published": utc(o.published.as_ref()),
        "sender": o.sender,
        "recipients": recipients,
        "propertyList": o.property_list,
    })
}

/// A transfer with its histories as JSON: the overview plus Altinn's two history lists.
pub fn details_json(d: &pb::FileTransferStatusDetails) -> Value {
    let mut value = d.overview.as_ref().map(overview_json).unwrap_or_else(|| json!({}));
    value["fileTransferStatusHistory"] = d
        .file_transfer_status_history
        .iter()
        .map(|e| {
            json!({
                "fileTransferStatus": status_name(e.file_transfer_status),
                "fileTransferStatusText": e.file_transfer_status_text,
                "fileTransferStatusChanged": utc(e.file_transfer_status_changed.as_ref()),
            })
        })
        .collect();
    value["recipientFileTransferStatusHistory"] = d
        .recipient_file_transfer_status_history
        .iter()
        .map(|e| {
            json!({
                "recipient": e.recipient,
                "recipientFileTransferStatusCode":
                    recipient_status_name(e.recipient_file_transfer_status_code),
                "recipientFileTransferStatusText": e.recipient_file_transfer_status_text,
                "recipientFileTransferStatusChanged":
                    utc(e.recipient_file_transfer_status_changed.as_ref()),
            })
        })
        .collect();
    value
}

/// A transfer's overview for people.
pub fn overview_human(o: &pb::FileTransferOverview, zone: &jiff::tz::TimeZone) -> String {
    let size_text = if o.file_transfer_size > 0 {
        format!("{} ({} bytes)", size(o.file_transfer_size), o.file_transfer_size)
    } else {
        String::new()
    };
    let mut out = lines(&[
        ("id", o.file_transfer_id.clone()),
        ("file", o.file_name.clone()),
        ("resource", o.resource_id.clone()),
        ("reference", o.senders_file_transfer_reference.clone()),
        (
            "status",
            format!("{} ({})", status_name(o.file_transfer_status), o.file_transfer_status_text),
        ),
        ("changed", time(o.file_transfer_status_changed.as_ref(), zone)),
        ("size", size_text),
        ("checksum", o.checksum.clone()),
        ("blake3", o.blake3.clone()),
        ("virus scan", if o.use_virus_scan { "yes".into() } else { "no".into() }),
        ("created", time(o.created.as_ref(), zone)),
        ("published", time(o.published.as_ref(), zone)),
        ("expires", time(o.expiration_time.as_ref(), zone)),
        ("sender", o.sender.clone()),
    ]);
    if !o.recipients.is_empty() {
        out.push_str("recipients:\n");
        let width = o.recipients.iter().map(|r| r.recipient.len()).max().unwrap_or(0);
        for r in &o.recipients {
            out.push_str(&format!(
                "  {:<width$}  {:<17}  {}\n",
                r.recipient,
                recipient_status_name(r.current_recipient_file_transfer_status_code),
                time(r.current_recipient_file_transfer_status_changed.as_ref(), zone),
            ));
        }
    }
    for (key, value) in &o.property_list {
        out.push_str(&format!("property: {key} = {value}\n"));
    }
    out
}

/// A transfer with its histories for people: the overview, then one timeline.
pub fn details_human(d: &pb::FileTransferStatusDetails, zone: &jiff::tz::TimeZone) -> String {
    let mut out = d.overview.as_ref().map(|o| overview_human(o, zone)).unwrap_or_default();
    let mut events: Vec<(i64, String)> = d
        .file_transfer_status_history
        .iter()
        .map(|e| {
            let at = e.file_transfer_status_changed.as_ref();
            (
                at.map_or(0, |t| t.seconds),
                format!(
                    "  {}  {:<22}  {}",
                    time(at, zone),
                    status_name(e.file_transfer_status),
                    e.file_transfer_status_text
                ),
            )
        })
        .chain(d.recipient_file_transfer_status_history.iter().map(|e| {
            let at = e.recipient_file_transfer_status_changed.as_ref();
            (
                at.map_or(0, |t| t.seconds),
                format!(
                    "  {}  {:<22}  {}",
                    time(at, zone),
                    recipient_status_name(e.recipient_file_transfer_status_code),
                    e.recipient
                ),
            )
        }))
        .collect();
    events.sort_by_key(|(at, _)| *at);
    out.push_str("history:\n");
    for (_, line) in events {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Search results for people: one row per transfer.
pub fn search_table(rows: &[pb::FileTransferOverview], zone: &jiff::tz::TimeZone) -> String {
    let header = ["ID", "FILE", "SIZE", "STATUS", "SENDER", "RECIPIENTS", "CREATED"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|o| {
            [
                o.file_transfer_id.clone(),
                o.file_name.clone(),
                size(o.file_transfer_size),
                status_name(o.file_transfer_status),
                o.sender.clone(),
                o.recipients.iter().map(|r| r.recipient.as_str()).collect::<Vec<_>>().join(","),
                time(o.created.as_ref(), zone),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |row: &[String]| {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    let mut out = render(&header.map(str::to_owned));
    for row in &cells {
        out.push_str(&render(row));
    }
    out
}

/// A resource as JSON (Altinn's GET resource names, plus Ferry's `access`).
pub fn resource_json(r: &pb::Resource) -> Value {
    json!({
        "resourceId": r.resource_id,
        "serviceOwnerId": r.service_owner,
        "maxFileTransferSize": r.max_file_transfer_size,
        "fileTransferTimeToLive": r.file_transfer_time_to_live,
        "purgeFileTransferAfterAllRecipientsConfirmed": r.purge_file_transfer_after_all_recipients_confirmed,
        "purgeFileTransferGracePeriod": r.purge_file_transfer_grace_period,
        "useManifestFileShim": r.use_manifest_file_shim,
        "externalServiceCodeLegacy": r.external_service_code_legacy,
        "externalServiceEditionCodeLegacy": r.external_service_edition_code_legacy,
        "requiredParty": r.required_party,
        "approvedForDisabledVirusScan": r.approved_for_disabled_virus_scan,
        "access": r.access.as_ref().map(|a| json!({ "senders": a.senders, "recipients": a.recipients })),
    })
}

/// A resource for people.
pub fn resource_human(r: &pb::Resource) -> String {
    let access = r.access.clone().unwrap_or_default();
    let list = |l: &[String]| if l.is_empty() { "(owner only)".to_owned() } else { l.join(", ") };
    lines(&[
        ("resource", r.resource_id.clone()),
        ("service owner", r.service_owner.clone()),
        (
            "max size",
            r.max_file_transfer_size
                .map_or_else(|| "(default)".to_owned(), |n| format!("{} ({n} bytes)", size(n))),
        ),
        ("time to live", r.file_transfer_time_to_live.clone()),
        (
            "purge after confirmed",
            if r.purge_file_transfer_after_all_recipients_confirmed { "yes" } else { "no" }.into(),
        ),
        ("grace period", r.purge_file_transfer_grace_period.clone()),
        ("required party", r.required_party.clone().unwrap_or_default()),
        (
            "unscanned approved",
            if r.approved_for_disabled_virus_scan { "yes".into() } else { String::new() },
        ),
        ("senders", list(&access.senders)),
        ("recipients", list(&access.recipients)),
    ])
}

/// A service owner as JSON.
pub fn service_owner_json(o: &pb::ServiceOwner) -> Value {
    json!({ "id": o.id, "name": o.name })
}

/// A service owner for people.
pub fn service_owner_human(o: &pb::ServiceOwner) -> String {
    lines(&[("service owner", o.id.clone()), ("name", o.name.clone())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn zone() -> jiff::tz::TimeZone {
        // A fixed zone with an offset, so snapshots do not depend on the machine's.
        jiff::tz::TimeZone::fixed(jiff::tz::offset(1))
    }

    fn overview() -> pb::FileTransferOverview {
        pb::FileTransferOverview {
            file_transfer_id: "0b6ad2a2-8c3f-4b53-9f0e-0d7e6c2b1a11".into(),
            resource_id: "example".into(),
            file_name: "report <final>.pdf".into(),
            senders_file_transfer_reference: "ref-7".into(),
            checksum: "9e107d9d372bb6826bd81d3542a419d6".into(),
            use_virus_scan: true,
            file_transfer_size: 52_428_800,
            file_transfer_status: pb::FileTransferStatus::Published as i32,
            file_transfer_status_text: "Ready for download".into(),
            file_transfer_status_changed: at(1_795_307_460),
            created: at(1_795_307_400),
            expiration_time: at(1_797_899_400),
            sender: "0192:910753614".into(),
            recipients: vec![
                pb::RecipientStatus {
                    recipient: "0192:986252932".into(),
                    current_recipient_file_transfer_status_code:
                        pb::RecipientFileTransferStatus::DownloadConfirmed as i32,
                    current_recipient_file_transfer_status_text: "Confirmed".into(),
                    current_recipient_file_transfer_status_changed: at(1_795_307_520),
                },
                pb::RecipientStatus {
                    recipient: "0192:910000003".into(),
                    current_recipient_file_transfer_status_code:
                        pb::RecipientFileTransferStatus::Initialized as i32,
                    current_recipient_file_transfer_status_text: "Initialized".into(),
                    current_recipient_file_transfer_status_changed: at(1_795_307_400),
                },
            ],
            property_list: [("case".to_owned(), "42".to_owned())].into(),
            published: at(1_795_307_460),
            blake3: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262".into(),
        }
    }

    fn details() -> pb::FileTransferStatusDetails {
        let status = |s: pb::FileTransferStatus, text: &str, t| pb::FileTransferStatusEvent {
            file_transfer_status: s as i32,
            file_transfer_status_text: text.into(),
            file_transfer_status_changed: at(t),
        };
        pb::FileTransferStatusDetails {
            overview: Some(overview()),
            file_transfer_status_history: vec![
                status(pb::FileTransferStatus::Initialized, "Initialized", 1_795_307_400),
                status(pb::FileTransferStatus::UploadStarted, "Upload started", 1_795_307_401),
                status(pb::FileTransferStatus::UploadProcessing, "Processing", 1_795_307_430),
                status(pb::FileTransferStatus::Published, "Ready for download", 1_795_307_460),
            ],
            recipient_file_transfer_status_history: vec![pb::RecipientStatusEvent {
                recipient: "0192:986252932".into(),
                recipient_file_transfer_status_code:
                    pb::RecipientFileTransferStatus::DownloadConfirmed as i32,
                recipient_file_transfer_status_text: "Confirmed".into(),
                recipient_file_transfer_status_changed: at(1_795_307_520),
            }],
        }
    }

    #[test]
    fn sizes_read_like_a_person_would_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(52_428_800), "50.0 MiB");
        assert_eq!(size(50_000_000_000), "46.6 GiB");
    }

    #[test]
    fn status_names_are_altinns() {
        assert_eq!(
            status_name(pb::FileTransferStatus::AllConfirmedDownloaded as i32),
            "AllConfirmedDownloaded"
        );
        assert_eq!(
            status_name(pb::FileTransferStatus::UploadProcessing as i32),
            "UploadProcessing"
        );
        assert_eq!(
            recipient_status_name(pb::RecipientFileTransferStatus::DownloadStarted as i32),
            "DownloadStarted"
        );
    }

    #[test]
    fn times_carry_the_local_offset() {
        assert_eq!(time(at(1_795_307_400).as_ref(), &zone()), "2026-11-22T01:30:00+01:00");
        assert_eq!(
            time(at(1_795_307_400).as_ref(), &jiff::tz::TimeZone::UTC),
            "2026-11-22T00:30:00+00:00"
        );
        assert_eq!(time(None, &zone()), "");
    }

    #[test]
    fn status_for_people() {
        insta::assert_snapshot!(overview_human(&overview(), &zone()));
    }

    #[test]
    fn details_for_people_as_one_timeline() {
        insta::assert_snapshot!(details_human(&details(), &zone()));
    }

    #[test]
    fn search_for_people_as_a_table() {
        let mut other = overview();
        other.file_transfer_id = "5d1f0c7e-2222-4b53-9f0e-0d7e6c2b1a11".into();
        other.file_name = "a.bin".into();
        other.file_transfer_size = 0;
        other.file_transfer_status = pb::FileTransferStatus::Initialized as i32;
        other.recipients.truncate(1);
        insta::assert_snapshot!(search_table(&[overview(), other], &zone()));
    }

    #[test]
    fn resources_for_people() {
        let resource = pb::Resource {
            resource_id: "example".into(),
            service_owner: "0192:991825827".into(),
            max_file_transfer_size: Some(1_000_000_000),
            file_transfer_time_to_live: "P30D".into(),
            purge_file_transfer_after_all_recipients_confirmed: true,
            purge_file_transfer_grace_period: "PT2H".into(),
            access: Some(pb::AccessRules {
                senders: vec!["0192:910753614".into()],
                recipients: vec![],
            }),
            ..Default::default()
        };
        insta::assert_snapshot!(resource_human(&resource));
    }

    #[test]
    fn json_keeps_a_stable_altinn_shaped_document() {
        let value = details_json(&details());
        insta::assert_json_snapshot!(value);
        // The names scripts rely on.
        assert_eq!(value["fileTransferStatus"], "Published");
        assert_eq!(value["fileTransferSize"], 52_428_800);
        assert_eq!(value["created"], "2026-11-22T00:30:00+00:00");
        assert_eq!(
            value["recipients"][0]["currentRecipientFileTransferStatusCode"],
            "DownloadConfirmed"
        );
        assert_eq!(value["fileTransferStatusHistory"][3]["fileTransferStatus"], "Published");
    }

    #[test]
    fn exit_codes_follow_the_status() {
        let code = |s: tonic::Status| exit_code(&anyhow::Error::new(s));
        assert_eq!(code(tonic::Status::not_found("x")), EXIT_NOT_FOUND);
        assert_eq!(code(tonic::Status::unauthenticated("x")), EXIT_DENIED);
        assert_eq!(code(tonic::Status::permission_denied("x")), EXIT_DENIED);
        assert_eq!(code(tonic::Status::unavailable("x")), EXIT_SERVER);
        assert_eq!(code(tonic::Status::invalid_argument("x")), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("transfer failed")), EXIT_FAILED);
    }
}
