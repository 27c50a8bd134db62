//! The OpenAPI 3.0 document of the JSON API, served at `/api/openapi.json`. Hand-written: the
//! API is small, and writing it out keeps the status codes exact.

use serde_json::{json, Value};

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn array(item: Value) -> Value {
    json!({"type": "array", "items": item})
}

fn path_param(name: &str, desc: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": desc, "schema": {"type": "string"}})
}

fn query_param(name: &str, desc: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": desc, "schema": schema})
}

/// Errors every authenticated operation may answer.
fn common(mut responses: Value) -> Value {
    let map = responses.as_object_mut().expect("responses object");
    map.entry("400")
        .or_insert_with(|| json!({"description": "malformed request"}));
    map.entry("401").or_insert_with(|| err("not authenticated"));
    map.entry("403")
        .or_insert_with(|| err("role too low, action not allowed, or CSRF token missing"));
    map.entry("503")
        .or_insert_with(|| err("the bus or the query path is down"));
    responses
}

fn get(summary: &str, params: Vec<Value>, responses: Value) -> Value {
    json!({"get": {"summary": summary, "parameters": params, "responses": common(responses)}})
}

/// The document.
pub(crate) fn document() -> Value {
    let s = |t: &str| json!({"type": t});
    let ns = |t: &str| json!({"type": t, "nullable": true});
    let service = path_param("slug", "the service as HOST:SERVICE, e.g. web-1:nginx");
    let accepted_job = ok("queued", r("Accepted"));
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/api/whoami".into(),
        get(
            "who the request authenticates as",
            vec![],
            json!({"200": ok("the principal", r("Whoami"))}),
        ),
    );
    paths.insert(
        "/api/hosts".into(),
        get(
            "every host with its state and services",
            vec![],
            json!({"200": ok("hosts", array(r("Host")))}),
        ),
    );
    paths.insert(
        "/api/hosts/{host}".into(),
        get(
            "one host",
            vec![path_param("host", "host id")],
            json!({"200": ok("the host", r("Host")), "404": err("unknown host")}),
        ),
    );
    paths.insert(
        "/api/services/{slug}/status".into(),
        get(
            "structured status of a service",
            vec![service.clone()],
            json!({"200": ok("status", r("ServiceStatus")), "404": err("unknown service")}),
        ),
    );
    paths.insert(
        "/api/services/{slug}/logs".into(),
        get(
            "recent log lines (runs the logs action and waits for it)",
            vec![service.clone(), query_param("lines", "how many lines (capped at 500)", json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64}))],
            json!({"200": ok("log lines", r("Logs")), "404": err("unknown service"), "409": err("a logs job for this service is already running")}),
        ),
    );
    paths.insert(
        "/api/services/{slug}/{action}".into(),
        json!({"post": {
            "summary": "run a service action (start, stop, restart, reload, status, logs, enable, disable)",
            "parameters": [service, path_param("action", "the action"), query_param("lines", "for logs: lines", json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64}))],
            "responses": common(json!({
                "202": accepted_job,
                "404": err("unknown service"),
                "403": err("action not allowed on this service, or role too low"),
                "409": ok("the same action is already running: `job` names it", r("Error")),
            }))
        }}),
    );
    paths.insert(
        "/api/jobs".into(),
        get(
            "jobs, newest first",
            vec![
                query_param("host", "host id", json!({"type": "string"})),
                query_param(
                    "state",
                    "queued, running, succeeded, failed, cancelled",
                    json!({"type": "string"}),
                ),
                query_param(
                    "run_type",
                    "action, task, batch, verb, adhoc",
                    json!({"type": "string"}),
                ),
                query_param(
                    "limit",
                    "page size (≤ 1000)",
                    json!({"type": "integer", "minimum": 0}),
                ),
            ],
            json!({"200": ok("jobs", array(r("Job")))}),
        ),
    );
    paths.insert(
        "/api/jobs/{job}".into(),
        get(
            "one job with its 32 KiB tail",
            vec![path_param("job", "job id (ULID)")],
            json!({"200": ok("the job", r("Job")), "404": err("unknown job")}),
        ),
    );
    paths.insert(
        "/api/jobs/{job}/output".into(),
        get("the full output", vec![path_param("job", "job id (ULID)")], json!({"200": {"description": "stdout and stderr as produced", "content": {"text/plain": {"schema": {"type": "string"}}}}, "404": err("unknown job")})),
    );
    paths.insert(
        "/api/jobs/{job}/cancel".into(),
        json!({"post": {"summary": "cancel a queued or running job (operator)", "parameters": [path_param("job", "job id (ULID)")],
            "responses": common(json!({"202": ok("cancel requested", r("Cancelled")), "404": err("unknown job"), "409": err("the job already ended")}))}}),
    );
    paths.insert(
        "/api/tasks".into(),
        get(
            "saved tasks",
            vec![],
            json!({"200": ok("tasks", array(json!({"type": "object"})))}),
        ),
    );
    paths.insert(
        "/api/tasks/{task}/run".into(),
        json!({"post": {"summary": "run a saved task on targets (operator)", "parameters": [path_param("task", "task id")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": r("RunTask")}}},
            "responses": common(json!({"202": ok("jobs started", r("JobsStarted")), "404": err("unknown task"), "409": err("already running"), "415": {"description": "not JSON"}, "422": {"description": "body does not match the schema"}}))}}),
    );
    paths.insert(
        "/api/events".into(),
        get(
            "events, newest first, paged by log sequence",
            vec![
                query_param("host", "host id", json!({"type": "string"})),
                query_param("service", "service name", json!({"type": "string"})),
                query_param(
                    "domain",
                    "agent, host, service, job, …",
                    json!({"type": "string"}),
                ),
                query_param("type", "event type", json!({"type": "string"})),
                query_param(
                    "severity",
                    "minimum severity: info, warn, error, critical",
                    json!({"type": "string", "enum": ["info", "warn", "error", "critical"]}),
                ),
                query_param("since", "RFC 3339 time", json!({"type": "string"})),
                query_param(
                    "before",
                    "only sequences below this (the previous page's next_before)",
                    json!({"type": "integer", "minimum": 0}),
                ),
                query_param(
                    "limit",
                    "page size (≤ 1000)",
                    json!({"type": "integer", "minimum": 0}),
                ),
            ],
            json!({"200": ok("a page", r("EventPage"))}),
        ),
    );
    paths.insert(
        "/api/events/stream".into(),
        get(
            "Server-Sent Events; the id is the log sequence, so Last-Event-ID resumes exactly",
            vec![query_param("host", "host id", json!({"type": "string"})), query_param("job", "job id", json!({"type": "string"})), query_param("last_event_id", "resume after this sequence", json!({"type": "integer", "minimum": 0}))],
            json!({"200": {"description": "event stream: `event: event`, `id: <log sequence>`, `data: <JSON of the event>`", "content": {"text/event-stream": {"schema": {"type": "object", "properties": {"id": s("string"), "event": s("string"), "data": s("string"), "retry": s("integer")}}}}}}),
        ),
    );
    paths.insert(
        "/api/alerts".into(),
        get(
            "alerts",
            vec![query_param(
                "state",
                "open, acknowledged, resolved, all (default: open and acknowledged)",
                json!({"type": "string"}),
            )],
            json!({"200": ok("alerts", array(r("Alert")))}),
        ),
    );
    paths.insert(
        "/api/alerts/{alert}/{verb}".into(),
        json!({"post": {"summary": "ack or resolve an alert (operator)", "parameters": [path_param("alert", "alert id"), path_param("verb", "ack or resolve")],
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"note": {"type": "string"}}}}}},
            "responses": common(json!({"202": ok("sent", json!({"type": "object"})), "404": err("unknown alert or verb"), "409": err("conflict"), "415": {"description": "not JSON"}, "422": {"description": "body does not match the schema"}}))}}),
    );
    paths.insert(
        "/api/schedules".into(),
        get(
            "schedules",
            vec![],
            json!({"200": ok("schedules", array(r("Schedule")))}),
        ),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "health: 503 when the bus or the query path is down", "security": [], "responses": {
            "200": ok("healthy", r("Health")), "503": ok("unavailable", r("Health"))}}}),
    );

    json!({
        "openapi": "3.0.3",
        "info": {"title": "fleetbus web API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Read the fleet, run service actions and tasks, follow events. Authenticate with `Authorization: Bearer <token>` (API tokens are created by admins on /users) or a browser session (writes then need the X-CSRF-Token header)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-fleetbus-session"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {"error": s("string"), "message": s("string"), "job": s("string")}},
                "Whoami": {"type": "object", "required": ["user", "role"], "properties": {"user": s("string"), "role": {"type": "string", "enum": ["viewer", "operator", "admin"]}}},
                "Accepted": {"type": "object", "required": ["job"], "properties": {"job": s("string"), "summary": s("string")}},
                "Cancelled": {"type": "object", "required": ["job"], "properties": {"job": s("string"), "message": s("string")}},
                "JobsStarted": {"type": "object", "required": ["jobs"], "properties": {"jobs": array(s("string"))}},
                "Host": {"type": "object", "required": ["host", "state", "services"], "properties": {
                    "host": s("string"), "state": {"type": "string", "enum": ["OK", "WARN", "DOWN", "DISABLED", "PENDING", "BLOCKED"]},
                    "tags": array(s("string")), "roles": array(s("string")), "last_seen": ns("string"), "open_alerts": s("integer"),
                    "services": array(json!({"type": "object", "properties": {"name": s("string"), "state": s("string"), "dot": {"type": "string", "enum": ["green", "red", "amber"]}}})),
                    "resources": {"type": "object", "nullable": true}}},
                "ServiceStatus": {"type": "object", "required": ["service", "state", "dot", "actions"], "properties": {
                    "service": s("string"), "host": s("string"), "name": s("string"), "state": s("string"), "dot": s("string"),
                    "sub_state": ns("string"), "detail": ns("string"), "main_pid": ns("integer"), "since": ns("string"), "observed_at": ns("string"),
                    "actions": array(s("string"))}},
                "Logs": {"type": "object", "required": ["service", "job", "lines"], "properties": {"service": s("string"), "job": s("string"), "lines": array(s("string"))}},
                "Job": {"type": "object", "required": ["job", "host", "state"], "properties": {
                    "job": s("string"), "host": s("string"), "run_type": s("string"), "summary": s("string"), "state": s("string"),
                    "step": s("string"), "exit_code": s("string"), "duration": s("string"), "actor": s("string"), "scheduled": s("string"),
                    "output_bytes": s("integer"), "tail": ns("string"), "reason": ns("string")}},
                "RunTask": {"type": "object", "required": ["targets"], "additionalProperties": false, "properties": {
                    "params": {"type": "object"},
                    "targets": {"type": "object", "additionalProperties": false, "properties": {"hosts": array(s("string")), "tags": array(s("string")), "roles": array(s("string"))}}}},
                "EventPage": {"type": "object", "required": ["events"], "properties": {"events": array(r("Event")), "next_before": ns("integer")}},
                "Event": {"type": "object", "required": ["seq", "time", "kind"], "properties": {
                    "seq": s("integer"), "time": s("string"), "time_iso": s("string"), "kind": s("string"), "host": s("string"),
                    "severity": s("string"), "actor": s("string"), "summary": s("string")}},
                "Alert": {"type": "object", "required": ["id", "state"], "properties": {
                    "id": s("string"), "kind": s("string"), "severity": s("string"), "state": s("string"), "host": s("string"), "service": s("string"),
                    "message": s("string"), "opened": s("string"), "acknowledged_by": s("string"), "resolved": s("string"), "note": s("string")}},
                "Schedule": {"type": "object", "required": ["id", "cron"], "properties": {
                    "id": s("string"), "cron": s("string"), "time_zone": s("string"), "action": s("string"), "paused": s("boolean"), "last_fired": s("string")}},
                "Health": {"type": "object", "required": ["status"], "properties": {"status": s("string"), "bus": s("boolean"), "query": s("string"), "events": s("boolean"), "last_seq": s("integer")}}
            }
        }
    })
}
