//! Reading a peer's lines with a length limit: a line over it is skipped up to its newline and
//! reported, and reading goes on (tokio-util's `LinesCodec` ends its stream after any error, so
//! one long line would end the link). Cancel-safe: the only await is `fill_buf`, and what was
//! read is kept in `self` between calls.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// What [`LineReader::next`] read.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(String),
    /// A line over the limit, of this many bytes (skipped).
    TooLong(usize),
    /// A line that is not UTF-8 (skipped).
    NotUtf8,
    /// The peer closed the link.
    End,
}

pub struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    max: usize,
    /// Bytes of a line over the limit skipped so far (`None`: not skipping).
    skipping: Option<usize>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(r: R, max: usize) -> LineReader<R> {
        LineReader { inner: BufReader::with_capacity(16 * 1024, r), buf: Vec::new(), max, skipping: None }
    }

    pub async fn next(&mut self) -> std::io::Result<Line> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(Line::End);
            }
            let newline = chunk.iter().position(|b| *b == b'\n');
            let take = newline.map_or(chunk.len(), |i| i + 1);
            let part = &chunk[..newline.unwrap_or(chunk.len())];
            match &mut self.skipping {
                Some(n) => *n += part.len(),
                None if self.buf.len() + part.len() > self.max => {
                    self.skipping = Some(self.buf.len() + part.len());
                    self.buf.clear();
                }
                None => self.buf.extend_from_slice(part),
            }
            self.inner.consume(take);
            if newline.is_some() {
                if let Some(n) = self.skipping.take() {
                    return Ok(Line::TooLong(n));
                }
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(match String::from_utf8(line) {
                    Ok(s) => Line::Text(s),
                    Err(_) => Line::NotUtf8,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_and_reading_goes_on() {
        let mut bytes = format!("short\n{}\nafter\r\n", "x".repeat(100)).into_bytes();
        // A fourth line that is not UTF-8, and an unterminated last one.
        bytes.extend_from_slice(b"\xffbad\nlast");
        let mut r = LineReader::new(&bytes[..], 10);
        assert_eq!(r.next().await.ok(), Some(Line::Text("short".into())));
        assert_eq!(r.next().await.ok(), Some(Line::TooLong(100)));
        assert_eq!(r.next().await.ok(), Some(Line::Text("after".into())));
        assert_eq!(r.next().await.ok(), Some(Line::NotUtf8));
        // An unterminated last line is not a line.
        assert_eq!(r.next().await.ok(), Some(Line::End));
    }
}
