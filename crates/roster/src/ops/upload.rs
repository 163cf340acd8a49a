//! Reads an NDJSON upload as a stream of line batches, never holding more than one batch.

use crate::domain::full_update::{LineError, MemberLine, StagedLine};
use crate::domain::operation::OnError;
use crate::domain::resource_sync::{ResourceLine, ResourceScope, StagedResource};
use crate::domain::InvalidInput;
use crate::store::{LineStream, StagedBatch, StoreError};
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};

/// Lines per batch handed to the store.
pub const BATCH_LINES: usize = 5_000;
/// Longest accepted line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Line errors kept for the answer to a refused chunk.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The bytes of an upload as they arrive.
pub type UploadBody = futures_util::stream::BoxStream<
    'static,
    Result<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>,
>;

/// The line errors of an upload, shared with the handler so that a refused chunk can list them.
#[derive(Debug, Clone, Default)]
pub struct LineErrors(Arc<Mutex<Errors>>);

#[derive(Debug, Default)]
struct Errors {
    first: Vec<LineError>,
    count: usize,
    too_large: bool,
}

impl LineErrors {
    fn push(&self, error: LineError) {
        if let Ok(mut errors) = self.0.lock() {
            errors.count += 1;
            if errors.first.len() < MAX_REPORTED_ERRORS {
                errors.first.push(error);
            }
        }
    }

    /// The first errors and how many there were in all.
    pub fn take(&self) -> (Vec<LineError>, usize) {
        self.0
            .lock()
            .map(|mut e| (std::mem::take(&mut e.first), e.count))
            .unwrap_or_default()
    }

    /// Whether the upload was refused for passing the size limit.
    pub fn too_large(&self) -> bool {
        self.0.lock().map(|e| e.too_large).unwrap_or(false)
    }

    fn refuse_size(&self) {
        if let Ok(mut errors) = self.0.lock() {
            errors.too_large = true;
        }
    }

    fn is_empty(&self) -> bool {
        self.0.lock().map(|e| e.count == 0).unwrap_or(true)
    }

    fn count(&self) -> usize {
        self.0.lock().map(|e| e.count).unwrap_or_default()
    }
}

/// A kind of upload line: parsed from JSON, then checked with what the operation says.
pub trait UploadLine: serde::de::DeserializeOwned {
    type Staged: Send + 'static;
    type Context: Send + 'static;
    fn stage(self, line: i32, context: &Self::Context) -> Result<Self::Staged, InvalidInput>;
}

impl UploadLine for MemberLine {
    type Staged = StagedLine;
    /// Whether the full-update covers a whole source system (every line names its group).
    type Context = bool;
    fn stage(self, line: i32, source_scope: &bool) -> Result<StagedLine, InvalidInput> {
        MemberLine::stage(self, line, *source_scope)
    }
}

impl UploadLine for ResourceLine {
    type Staged = StagedResource;
    type Context = ResourceScope;
    fn stage(self, line: i32, scope: &ResourceScope) -> Result<StagedResource, InvalidInput> {
        ResourceLine::stage(self, line, scope)
    }
}

struct Reader<L: UploadLine> {
    body: UploadBody,
    /// Bytes read so far, and the most accepted.
    read: usize,
    limit: usize,
    buffer: BytesMut,
    line: i32,
    done: bool,
    chunk: i32,
    context: L::Context,
    on_error: OnError,
    errors: LineErrors,
    kind: std::marker::PhantomData<fn() -> L>,
}

/// How to read one chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkFormat {
    pub chunk: i32,
    pub on_error: OnError,
    /// The most bytes accepted.
    pub limit: usize,
}

/// Parses `body` as NDJSON lines of kind `L`, checked with `context`. With `OnError::Fail`, a bad
/// line ends the stream with an error after the body is read (so that every bad line is
/// reported); with `OnError::Skip`, bad lines travel in the batches as rejections. A body longer
/// than the limit ends the stream with an error.
pub fn lines<L: UploadLine + 'static>(
    body: UploadBody,
    format: ChunkFormat,
    context: L::Context,
    errors: LineErrors,
) -> LineStream<'static, L::Staged> {
    let ChunkFormat {
        chunk,
        on_error,
        limit,
    } = format;
    let reader = Reader::<L> {
        body,
        read: 0,
        limit,
        buffer: BytesMut::new(),
        line: 0,
        done: false,
        chunk,
        context,
        on_error,
        errors,
        kind: std::marker::PhantomData,
    };
    Box::pin(futures_util::stream::unfold(reader, |mut r| async move {
        if r.done {
            return None;
        }
        let item = r.next_batch().await;
        if item.is_err() {
            r.done = true;
        }
        Some((item, r))
    }))
}

impl<L: UploadLine> Reader<L> {
    async fn next_batch(&mut self) -> Result<StagedBatch<L::Staged>, StoreError> {
        let mut batch = StagedBatch::default();
        while batch.lines.len() + batch.rejected.len() < BATCH_LINES {
            match self.next_line().await? {
                Some(raw) => self.parse(&raw, &mut batch),
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if self.done && self.on_error == OnError::Fail {
            let count = self.errors.count();
            if count > 0 {
                return Err(StoreError::Invalid(crate::domain::InvalidInput::new(format!(
                    "{count} line(s) of chunk {} could not be read; nothing of the chunk was stored",
                    self.chunk
                ))));
            }
        }
        Ok(batch)
    }

    fn parse(&mut self, raw: &[u8], batch: &mut StagedBatch<L::Staged>) {
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        if text.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let parsed = crate::domain::input::check_json(text)
            .map_err(|refusal| format!("the line {refusal}"))
            .and_then(|()| serde_json::from_slice::<L>(text).map_err(|e| e.to_string()))
            .and_then(|l| l.stage(self.line, &self.context).map_err(|e| e.0));
        match parsed {
            Ok(line) if self.errors.is_empty() || self.on_error == OnError::Skip => {
                batch.lines.push(line)
            }
            Ok(_) => {}
            Err(reason) => {
                let error = LineError {
                    chunk: self.chunk,
                    line: self.line,
                    reason,
                };
                self.errors.push(error.clone());
                if self.on_error == OnError::Skip {
                    batch.rejected.push(error);
                }
            }
        }
    }

    /// The next line without its newline; `None` at the end of the body.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end).to_vec();
                self.buffer.advance(1);
                self.line += 1;
                return Ok(Some(line));
            }
            if self.buffer.len() > MAX_LINE_BYTES {
                return Err(StoreError::Invalid(crate::domain::InvalidInput::new(
                    format!(
                        "line {} of chunk {} is longer than {MAX_LINE_BYTES} bytes",
                        self.line + 1,
                        self.chunk
                    ),
                )));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.read += bytes.len();
                    if self.read > self.limit {
                        self.errors.refuse_size();
                        return Err(StoreError::Invalid(crate::domain::InvalidInput::new(
                            format!(
                                "chunk {} is larger than the {} bytes a chunk may have; split the \
                             upload into more chunks",
                                self.chunk, self.limit
                            ),
                        )));
                    }
                    self.buffer.extend_from_slice(&bytes);
                }
                Some(Err(e)) => {
                    return Err(StoreError::Invalid(crate::domain::InvalidInput::new(
                        format!("the upload could not be read: {e}"),
                    )))
                }
                None if self.buffer.is_empty() => return Ok(None),
                None => {
                    self.line += 1;
                    return Ok(Some(std::mem::take(&mut self.buffer).to_vec()));
                }
            }
        }
    }
}
