//! The OpenAPI 3.1 document of the REST API, built in code next to the handlers it describes
//! (served at `/broker/api/v1/openapi.json`, with Swagger UI at `/broker/api/v1/swagger`). A test
//! calls every documented operation on a live server, so the document cannot list a route the
//! server lacks; schemathesis checks the responses against it.

use serde_json::{Value, json};

fn problem_ref() -> Value {
    json!({ "$ref": "#/components/schemas/ProblemDetails" })
}

/// Responses every authenticated operation can give, besides its own.
fn common_errors(mut responses: Value) -> Value {
    let problem = json!({ "application/problem+json": { "schema": problem_ref() } });
    let map = responses.as_object_mut().expect("an object");
    map.entry("400").or_insert(json!({ "description": "Invalid request (ProblemDetails or ValidationProblemDetails)", "content": problem }));
    map.entry("401").or_insert(json!({ "description": "No or invalid token (with WWW-Authenticate: Bearer), or no access to the resource (code BRO-00006)", "content": problem }));
    map.entry("403")
        .or_insert(json!({ "description": "The token lacks the scope", "content": problem }));
    map.entry("404").or_insert(json!({ "description": "Not found", "content": problem }));
    map.entry("409").or_insert(json!({ "description": "Conflict", "content": problem }));
    map.entry("406").or_insert(json!({ "description": "The Accept header allows none of the produced types", "content": { "text/plain": { "schema": { "type": "string" } } } }));
    map.entry("503").or_insert(json!({ "description": "Try again later", "content": problem }));
    responses
}

fn id_param(name: &str) -> Value {
    let pattern = if name == "resourceId" { "^[^:/?#]{1,255}$" } else { "^[0-9a-fA-F-]{36}$" };
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "pattern": pattern } })
}

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn op(summary: &str, scopes: &[&str], mut fields: Value, responses: Value) -> Value {
    let map = fields.as_object_mut().expect("an object");
    map.insert("summary".into(), json!(summary));
    map.insert("security".into(), json!([{ "bearer": scopes }]));
    map.insert("responses".into(), common_errors(responses));
    fields
}

/// The document.
pub fn document() -> Value {
    let status_enum = json!([
        "Initialized",
        "UploadStarted",
        "UploadProcessing",
        "Published",
        "Cancelled",
        "AllConfirmedDownloaded",
        "Purged",
        "Failed"
    ]);
    let recipient_enum = json!(["Initialized", "DownloadStarted", "DownloadConfirmed"]);
    let time = json!({ "type": "string", "format": "date-time" });
    let nullable_string = json!({ "type": ["string", "null"] });
    let transfer_fields = json!({
        "fileTransferId": { "type": "string", "format": "uuid" },
        "resourceId": { "type": "string" },
        "fileName": { "type": "string" },
        "sendersFileTransferReference": { "type": "string" },
        "checksum": nullable_string,
        "useVirusScan": { "type": "boolean" },
        "fileTransferSize": { "type": "integer", "minimum": 0 },
        "fileTransferStatus": { "type": "string", "enum": status_enum },
        "fileTransferStatusText": { "type": "string" },
        "fileTransferStatusChanged": time,
        "created": time,
        "expirationTime": time,
        "sender": { "type": "string" },
        "recipients": { "type": "array", "items": schema_ref("RecipientFileTransferStatusDetailsExt") },
        "propertyList": { "type": "object", "additionalProperties": { "type": "string" } },
        "blake3": { "type": ["string", "null"], "description": "Ferry extension: BLAKE3 of the content" },
    });
    let mut overview = transfer_fields.clone();
    overview["published"] = json!({ "type": ["string", "null"], "format": "date-time" });
    let mut details = transfer_fields;
    details["fileTransferStatusHistory"] = json!({ "type": "array", "items": {
        "type": "object",
        "properties": {
            "fileTransferStatus": { "type": "string", "enum": status_enum },
            "fileTransferStatusText": { "type": "string" },
            "fileTransferStatusChanged": time,
        },
    }});
    details["recipientFileTransferStatusHistory"] = json!({ "type": "array", "items": {
        "type": "object",
        "properties": {
            "recipient": { "type": "string" },
            "recipientFileTransferStatusCode": { "type": "string", "enum": recipient_enum },
            "recipientFileTransferStatusText": { "type": "string" },
            "recipientFileTransferStatusChanged": time,
        },
    }});
    let write = ["altinn:broker.write"];
    let read = ["altinn:broker.read"];
    let either = ["altinn:broker.write", "altinn:broker.read"];
    let owner = ["altinn:serviceowner"];
    let id = id_param("fileTransferId");
    let ok_id = json_response("The file transfer", schema_ref("FileTransferInitializeResponseExt"));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ferry: Altinn 3 Broker-compatible API",
            "version": "1.0",
            "description": "Altinn 3 Broker's REST API (paths, names, statuses and errors as Altinn's), with Ferry's extensions marked as such: the Idempotency-Key header, the continuationToken search parameter and X-Continuation-Token header, blake3 fields, and access rules on resources.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "ProblemDetails": {
                    "type": "object",
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "code": { "type": "string", "pattern": "^BRO-\\d{5}$" },
                        "traceId": { "type": "string" },
                        "errors": { "type": "object", "additionalProperties": { "type": "array", "items": { "type": "string" } } },
                    },
                    "required": ["type", "title", "status", "traceId"],
                },
                "FileTransferInitalizeExt": {
                    "type": "object",
                    "required": ["fileName", "resourceId", "sendersFileTransferReference", "sender", "recipients"],
                    "properties": {
                        "fileName": { "type": "string", "minLength": 1, "maxLength": 255 },
                        "resourceId": { "type": "string", "pattern": "^(?:urn:altinn:resource:)?[^:]{1,255}$" },
                        "sendersFileTransferReference": { "type": "string", "minLength": 1, "maxLength": 4096 },
                        "sender": { "type": "string", "pattern": "^(?:0192:\\d{9}|urn:altinn:organization:identifier-no:\\d{9})$" },
                        "recipients": { "type": "array", "minItems": 1, "items": { "type": "string", "pattern": "^(?:0192:\\d{9}|urn:altinn:organization:identifier-no:\\d{9})$" } },
                        "propertyList": { "type": "object", "maxProperties": 10, "additionalProperties": { "type": "string", "maxLength": 3000 } },
                        "checksum": { "type": ["string", "null"], "pattern": "^[0-9a-f]{32}$" },
                        "disableVirusScan": { "type": ["boolean", "null"] },
                        "blake3": { "type": ["string", "null"], "description": "Ferry extension" },
                    },
                },
                "FileTransferInitializeResponseExt": {
                    "type": "object",
                    "required": ["fileTransferId"],
                    "properties": { "fileTransferId": { "type": "string", "format": "uuid" } },
                },
                "RecipientFileTransferStatusDetailsExt": {
                    "type": "object",
                    "properties": {
                        "recipient": { "type": "string" },
                        "currentRecipientFileTransferStatusCode": { "type": "string", "enum": recipient_enum },
                        "currentRecipientFileTransferStatusText": { "type": "string" },
                        "currentRecipientFileTransferStatusChanged": time,
                    },
                },
                "FileTransferOverviewExt": { "type": "object", "properties": overview },
                "FileTransferStatusDetailsExt": { "type": "object", "properties": details },
                "ServiceOwnerInitializeExt": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string", "minLength": 1 } } },
                "ServiceOwnerOverviewExt": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "storageProviders": { "type": "array", "items": { "type": "object", "properties": {
                            "type": { "type": "string" }, "deploymentStatus": { "type": "string" }, "deploymentEnvironment": { "type": "string" },
                        }}},
                    },
                },
                "ResourceExt": {
                    "type": "object",
                    "properties": {
                        "maxFileTransferSize": { "type": ["integer", "null"] },
                        "fileTransferTimeToLive": { "type": ["string", "null"], "description": "ISO-8601 duration in; .NET TimeSpan text out (e.g. 30.00:00:00)" },
                        "purgeFileTransferAfterAllRecipientsConfirmed": { "type": ["boolean", "null"] },
                        "purgeFileTransferGracePeriod": { "type": ["string", "null"] },
                        "useManifestFileShim": { "type": ["boolean", "null"] },
                        "externalServiceCodeLegacy": { "type": ["string", "null"] },
                        "externalServiceEditionCodeLegacy": { "type": ["integer", "null"] },
                        "requiredParty": { "type": ["string", "null"], "pattern": "^(?:\\d{9}|0192:\\d{9}|urn:altinn:organization:identifier-no:\\d{9})$" },
                        "access": {
                            "type": ["object", "null"],
                            "description": "Ferry extension: parties that may send and receive (the owner always may)",
                            "properties": {
                                "senders": { "type": ["array", "null"], "items": { "type": "string" } },
                                "recipients": { "type": ["array", "null"], "items": { "type": "string" } },
                            },
                        },
                    },
                },
            },
        },
        "paths": {
            "/broker/api/v1/filetransfer": {
                "post": op("Initialize a file transfer", &write, json!({
                    "operationId": "initialize",
                    "parameters": [{ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string" }, "description": "Ferry extension" }],
                    "requestBody": json_body("FileTransferInitalizeExt"),
                }), json!({ "200": ok_id })),
                "get": op("Search file transfers", &either, json!({
                    "operationId": "search",
                    "parameters": [
                        { "name": "resourceId", "in": "query", "required": true, "schema": { "type": "string", "pattern": "^[^:]{1,255}$" } },
                        { "name": "status", "in": "query", "schema": { "type": "string", "enum": status_enum } },
                        { "name": "recipientStatus", "in": "query", "schema": { "type": "string", "enum": recipient_enum } },
                        { "name": "from", "in": "query", "schema": time },
                        { "name": "to", "in": "query", "schema": time },
                        { "name": "orderAscending", "in": "query", "schema": { "type": "boolean" } },
                        { "name": "role", "in": "query", "schema": { "type": "string", "enum": ["Sender", "Recipient"] } },
                        { "name": "continuationToken", "in": "query", "schema": { "type": "string", "pattern": "^-?\\d+\\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$" }, "description": "Ferry extension: from a previous X-Continuation-Token" },
                    ],
                }), json!({ "200": json_response("At most 100 ids; more in the X-Continuation-Token header (Ferry extension)", json!({ "type": "array", "items": { "type": "string", "format": "uuid" } })) })),
            },
            "/broker/api/v1/filetransfer/upload": {
                "post": op("Initialize and upload (multipart)", &write, json!({
                    "operationId": "initializeAndUpload",
                    "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": {
                        "type": "object",
                        "required": ["FileTransfer", "Metadata.FileName", "Metadata.ResourceId", "Metadata.Sender", "Metadata.Recipients"],
                        "properties": {
                            "Metadata.FileName": { "type": "string" },
                            "Metadata.ResourceId": { "type": "string" },
                            "Metadata.SendersFileTransferReference": { "type": "string" },
                            "Metadata.Sender": { "type": "string" },
                            "Metadata.Recipients": { "type": "array", "items": { "type": "string" } },
                            "Metadata.Checksum": { "type": "string" },
                            "Metadata.DisableVirusScan": { "type": "boolean" },
                            "FileTransfer": { "type": "string", "format": "binary" },
                        },
                    }}}},
                }), json!({ "200": ok_id })),
            },
            "/broker/api/v1/filetransfer/{fileTransferId}": {
                "get": op("Overview", &either, json!({ "operationId": "overview", "parameters": [id] }),
                    json!({ "200": json_response("The overview", schema_ref("FileTransferOverviewExt")), "404": { "description": "Not found (BRO-00001)", "content": { "application/problem+json": { "schema": problem_ref() } } } })),
            },
            "/broker/api/v1/filetransfer/{fileTransferId}/details": {
                "get": op("Details with status histories", &either, json!({ "operationId": "details", "parameters": [id] }),
                    json!({ "200": json_response("The details", schema_ref("FileTransferStatusDetailsExt")), "404": { "description": "Not found (BRO-00001)", "content": { "application/problem+json": { "schema": problem_ref() } } } })),
            },
            "/broker/api/v1/filetransfer/{fileTransferId}/upload": {
                "post": op("Upload the file (streamed body; chunked encoding allowed)", &write, json!({
                    "operationId": "upload",
                    "parameters": [id],
                    "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                }), json!({ "200": ok_id, "404": { "description": "Not found (BRO-00001)", "content": { "application/problem+json": { "schema": problem_ref() } } }, "409": { "description": "Already uploaded (BRO-00004)", "content": { "application/problem+json": { "schema": problem_ref() } } } })),
            },
            "/broker/api/v1/filetransfer/{fileTransferId}/download": {
                "get": op("Download the file (single Range supported)", &read, json!({
                    "operationId": "download",
                    "parameters": [id, { "name": "Range", "in": "header", "schema": { "type": "string" } }],
                }), json!({
                    "200": { "description": "The file", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "206": { "description": "A range of the file", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "404": { "description": "Not found (BRO-00001)", "content": { "application/problem+json": { "schema": problem_ref() } } },
                    "416": { "description": "Range not satisfiable (BRO-00029)", "content": { "application/problem+json": { "schema": problem_ref() } } },
                })),
            },
            "/broker/api/v1/filetransfer/{fileTransferId}/confirmdownload": {
                "post": op("Confirm the download", &read, json!({ "operationId": "confirmDownload", "parameters": [id] }),
                    json!({ "204": { "description": "Confirmed (again: no-op)" }, "404": { "description": "Not found (BRO-00001)", "content": { "application/problem+json": { "schema": problem_ref() } } } })),
            },
            "/broker/api/v1/serviceowner": {
                "post": op("Register the caller as a service owner", &owner, json!({ "operationId": "registerServiceOwner", "requestBody": json_body("ServiceOwnerInitializeExt") }),
                    json!({ "200": { "description": "Registered" }, "409": { "description": "Already registered (BRO-07002)", "content": { "application/problem+json": { "schema": problem_ref() } } } })),
                "get": op("The caller's service owner", &owner, json!({ "operationId": "getServiceOwner" }),
                    json!({ "200": json_response("The service owner", schema_ref("ServiceOwnerOverviewExt")), "404": { "description": "Not registered (BRO-07004)", "content": { "application/problem+json": { "schema": problem_ref() } } } })),
            },
            "/broker/api/v1/resource/{resourceId}": {
                "put": op("Configure a resource", &owner, json!({ "operationId": "putResource", "parameters": [id_param("resourceId")], "requestBody": json_body("ResourceExt") }),
                    json!({ "204": { "description": "Configured" } })),
                "get": op("A resource's configuration", &owner, json!({ "operationId": "getResource", "parameters": [id_param("resourceId")] }),
                    json!({ "200": json_response("The configuration", schema_ref("ResourceExt")) })),
            },
            "/broker/api/v1/statistics/monthly": {
                "get": op("Monthly statistics (CSV)", &owner, json!({
                    "operationId": "monthlyStatistics",
                    "parameters": [
                        { "name": "year", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 1, "maximum": 9999 } },
                        { "name": "month", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 1, "maximum": 12 } },
                        { "name": "resourceId", "in": "query", "schema": { "type": "string", "pattern": "^[^:]{1,255}$" } },
                        { "name": "includeEndUser", "in": "query", "schema": { "type": "boolean" } },
                        { "name": "includeVendor", "in": "query", "schema": { "type": "boolean" } },
                    ],
                }), json!({
                    "200": { "description": "CSV", "content": { "text/csv": { "schema": { "type": "string" } } } },
                    "404": { "description": "No transfers (BRO-06001)", "content": { "application/problem+json": { "schema": problem_ref() } } },
                })),
            },
        },
    })
}
