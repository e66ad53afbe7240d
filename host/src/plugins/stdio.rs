//! Guest stdout/stderr into `tracing`, line by line, tagged with the plugin.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::log_budget::LogBudget;

/// Longest line kept; longer output is split so a runaway guest cannot grow
/// host memory through its stdout.
const MAX_LINE: usize = 4096;

/// Which guest stream a line came from.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A `StdoutStream` that logs each line through `tracing`.
#[derive(Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    stream: Stream,
    budget: LogBudget,
}

impl LogStream {
    pub fn new(plugin: Arc<str>, stream: Stream, budget: LogBudget) -> Self {
        LogStream {
            plugin,
            stream,
            budget,
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            plugin: self.plugin.clone(),
            stream: self.stream,
            budget: self.budget.clone(),
            buf: Vec::new(),
        })
    }
}

struct LineWriter {
    plugin: Arc<str>,
    stream: Stream,
    budget: LogBudget,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        if !self.budget.admit(line.len()) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match self.stream {
            Stream::Stdout => tracing::info!(plugin = %self.plugin, stream = "stdout", "{text}"),
            Stream::Stderr => tracing::warn!(plugin = %self.plugin, stream = "stderr", "{text}"),
        }
    }

    fn push(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = std::mem::take(&mut self.buf);
                self.emit(&line);
            } else {
                self.buf.push(b);
                if self.buf.len() >= MAX_LINE {
                    let line = std::mem::take(&mut self.buf);
                    self.emit(&line);
                }
            }
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}
