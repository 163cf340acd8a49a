//! `roster import`: runs a full-update (of memberships, or with `--resources` of a source's
//! resources) from an NDJSON or CSV file through the HTTP API, in chunks, with a progress bar;
//! `--dry-run` shows the preview and changes nothing.

use crate::cli::{FileFormat, ImportArgs};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach roster: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line} of the CSV file: {message}")]
    Csv { line: u64, message: String },
    #[error("roster refused {what} ({status}): {detail}")]
    Refused {
        what: String,
        status: u16,
        detail: String,
    },
}

/// How an import ended: the operation as roster reports it.
pub struct ImportOutcome {
    pub operation: Value,
    pub dry_run: bool,
}

impl ImportOutcome {
    /// 0 when applied (or a dry run), 3 when held for approval, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.operation["status"].as_str() {
            _ if self.dry_run => 0,
            Some("complete") => 0,
            Some("pending") => 3,
            _ => 1,
        }
    }
}

struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Client {
    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, ImportError> {
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let mut detail = body["detail"].as_str().unwrap_or("no detail").to_owned();
        if let Some(errors) = body["errors"].as_array() {
            for e in errors.iter().take(10) {
                detail.push_str(&format!(
                    "\n  chunk {} line {}: {}",
                    e["chunk"],
                    e["line"],
                    e["reason"].as_str().unwrap_or_default()
                ));
            }
        }
        Err(ImportError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            detail,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }
}

pub async fn run(args: ImportArgs) -> Result<ImportOutcome, ImportError> {
    let client = Client {
        http: reqwest::Client::new(),
        server: args.server.clone(),
        token: args.token.clone(),
    };
    let on_error = if args.skip_bad_lines { "skip" } else { "fail" };
    let mut body = json!({"type": "full-update", "on_error": on_error});
    if args.resources {
        body["target"] = json!("resources");
        if let Some(ty) = &args.resource_type {
            body["resource_type"] = json!(ty);
        }
    }
    match (&args.group, &args.source) {
        (Some(group), _) => body["group_id"] = json!(group),
        (None, Some(source)) => body["source_system"] = json!(source),
        (None, None) => {
            return Err(ImportError::Usage(
                "name the scope with --group or --source".to_owned(),
            ))
        }
    }
    let op = client
        .send(
            "the full-update",
            client
                .http
                .post(client.url("/api/v1/operations"))
                .json(&body),
        )
        .await?;
    let id = op["id"].as_i64().unwrap_or_default();
    match upload(&client, &args, id).await {
        Ok(()) => {}
        Err(e) => {
            let _ = cancel(&client, id).await;
            return Err(e);
        }
    }
    if args.dry_run {
        return dry_run(&client, id).await;
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(args.wait);
    let mut operation = client
        .send(
            "complete",
            client.http.post(client.url(&format!(
                "/api/v1/operations/{id}/complete?wait={}",
                args.wait
            ))),
        )
        .await?;
    // The server waits a little less than its request timeout; a longer apply is polled.
    while operation["status"] == "running" && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        operation = client
            .send(
                "the operation",
                client
                    .http
                    .get(client.url(&format!("/api/v1/operations/{id}"))),
            )
            .await?;
    }
    Ok(ImportOutcome {
        operation,
        dry_run: false,
    })
}

async fn cancel(client: &Client, id: i64) -> Result<Value, ImportError> {
    client
        .send(
            "the cancellation",
            client
                .http
                .delete(client.url(&format!("/api/v1/operations/{id}"))),
        )
        .await
}

async fn dry_run(client: &Client, id: i64) -> Result<ImportOutcome, ImportError> {
    let mut summary = Map::new();
    for action in ["remove", "add"] {
        let page = client
            .send(
                "the preview",
                client.http.get(client.url(&format!(
                    "/api/v1/operations/{id}/preview?action={action}&limit=10"
                ))),
            )
            .await?;
        summary.insert(format!("to_{action}"), page[format!("to_{action}")].clone());
        summary.insert(format!("first_{action}s"), page["items"].clone());
    }
    let mut operation = cancel(client, id).await?;
    operation["preview"] = Value::Object(summary);
    Ok(ImportOutcome {
        operation,
        dry_run: true,
    })
}

async fn upload(client: &Client, args: &ImportArgs, id: i64) -> Result<(), ImportError> {
    let file = std::fs::File::open(&args.file)?;
    let total = file.metadata()?.len();
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let format = args.format.unwrap_or_else(|| {
        if args
            .file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            FileFormat::Csv
        } else {
            FileFormat::Ndjson
        }
    });
    let counted = progress.wrap_read(file);
    let mut lines = match format {
        FileFormat::Ndjson => Lines::Ndjson(BufReader::new(Box::new(counted))),
        FileFormat::Csv => Lines::Csv(Box::new(csv::Reader::from_reader(
            Box::new(counted) as Box<dyn Read>
        ))),
    };
    let started = Instant::now();
    let (mut chunk, mut sent, mut staged, mut rejected) = (0u32, 0u64, 0i64, 0i64);
    loop {
        let mut body = Vec::new();
        let mut in_chunk = 0;
        while in_chunk < args.chunk_lines {
            match lines.next_line(&mut body)? {
                true => in_chunk += 1,
                false => break,
            }
        }
        if in_chunk == 0 && chunk > 0 {
            break;
        }
        let reply = client
            .send(
                &format!("chunk {chunk}"),
                client
                    .http
                    .put(client.url(&format!("/api/v1/operations/{id}/chunks/{chunk}")))
                    .header("content-type", "application/x-ndjson")
                    .body(body),
            )
            .await?;
        staged += reply["staged"].as_i64().unwrap_or_default();
        rejected += reply["rejected"].as_i64().unwrap_or_default();
        sent += in_chunk as u64;
        let rate = sent as f64 / started.elapsed().as_secs_f64().max(0.001);
        progress.set_message(format!(
            "{sent} lines, {rate:.0} lines/s, {staged} staged, {rejected} rejected"
        ));
        chunk += 1;
        if in_chunk < args.chunk_lines {
            break;
        }
    }
    progress.finish_with_message(format!(
        "{sent} lines in {chunk} chunk(s): {staged} staged, {rejected} rejected"
    ));
    Ok(())
}

/// The lines of the input, each appended to a chunk body as one NDJSON line.
enum Lines {
    Ndjson(BufReader<Box<dyn Read>>),
    Csv(Box<csv::Reader<Box<dyn Read>>>),
}

impl Lines {
    /// Appends the next line to `out`; false at the end of the input.
    fn next_line(&mut self, out: &mut Vec<u8>) -> Result<bool, ImportError> {
        match self {
            Lines::Ndjson(reader) => loop {
                let start = out.len();
                if reader.read_until(b'\n', out)? == 0 {
                    return Ok(false);
                }
                if out[start..].iter().all(u8::is_ascii_whitespace) {
                    out.truncate(start);
                    continue;
                }
                if out.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
                return Ok(true);
            },
            Lines::Csv(reader) => {
                let headers = reader.headers().map_err(csv_error)?.clone();
                let mut record = csv::StringRecord::new();
                if !reader.read_record(&mut record).map_err(csv_error)? {
                    return Ok(false);
                }
                let mut line = Map::new();
                for (name, value) in headers.iter().zip(record.iter()) {
                    if value.is_empty() {
                        continue;
                    }
                    let value = match name {
                        "contributing" | "active" => boolean(value),
                        "tags" => json!(value.split(';').map(str::trim).collect::<Vec<_>>()),
                        _ => json!(value),
                    };
                    line.insert(name.to_owned(), value);
                }
                serde_json::to_writer(&mut *out, &Value::Object(line))
                    .map_err(|e| ImportError::Io(e.into()))?;
                out.push(b'\n');
                Ok(true)
            }
        }
    }
}

/// A CSV truth value: true/false, yes/no, 1/0; anything else goes to roster as written, which
/// refuses the line.
fn boolean(value: &str) -> Value {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => json!(true),
        "false" | "no" | "0" => json!(false),
        _ => json!(value),
    }
}

fn csv_error(e: csv::Error) -> ImportError {
    ImportError::Csv {
        line: e.position().map_or(0, csv::Position::line),
        message: e.to_string(),
    }
}
