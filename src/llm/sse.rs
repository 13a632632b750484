//! Incremental Server-Sent Events parser (the WHATWG event-stream format):
//! bytes go in as they arrive from the network, split anywhere; complete
//! events come out. Handles `event:`/`data:` fields, multi-line data,
//! comments, and LF, CRLF or CR line endings.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The event's data as JSON (providers' stream events are JSON objects;
    /// some pad them with spaces: parse, never pattern-match).
    pub fn json(&self) -> Result<serde_json::Value, super::LlmError> {
        serde_json::from_str(&self.data).map_err(|e| {
            super::LlmError::InvalidResponse(format!("stream event is not JSON ({e})"))
        })
    }
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    /// The previous chunk ended in CR: a following LF belongs to it.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        if self.after_cr && bytes.first() == Some(&b'\n') {
            start = 1;
            i = 1;
        }
        self.after_cr = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                self.buf.extend_from_slice(&bytes[start..i]);
                let line = std::mem::take(&mut self.buf);
                self.line(&line, &mut out);
                if b == b'\r' {
                    if i + 1 < bytes.len() {
                        if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.after_cr = true;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.buf.extend_from_slice(&bytes[start.min(bytes.len())..]);
        out
    }

    /// End of stream: dispatches an event whose final blank line never came
    /// (some servers close right after the last `data:` line). A cut-off
    /// line is passed on too; its JSON then fails to parse and is reported.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, &mut out);
        }
        self.line(&[], &mut out);
        out
    }

    /// True when the stream stopped in the middle of an event.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || !self.data.is_empty()
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: a\ndata: {\"x\":1}\n\n: comment\ndata: line1\ndata: line2\n\nevent: b\r\ndata: crlf\r\n\r\ndata: cr\r\rdata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: Some("a".into()),
                data: "{\"x\":1}".into(),
            },
            SseEvent {
                event: None,
                data: "line1\nline2".into(),
            },
            SseEvent {
                event: Some("b".into()),
                data: "crlf".into(),
            },
            SseEvent {
                event: None,
                data: "cr".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn whole_stream() {
        assert_eq!(SseParser::new().feed(STREAM.as_bytes()), expected());
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for b in STREAM.as_bytes() {
            got.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(got, expected());
        assert!(!p.has_partial());
    }

    #[test]
    fn finish_flushes_an_unterminated_event() {
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: a\n\ndata: {\"type\":\"stop\"}").len(), 1);
        assert_eq!(
            p.finish(),
            vec![SseEvent {
                event: None,
                data: "{\"type\":\"stop\"}".into()
            }]
        );
    }

    #[test]
    fn truncated_stream_is_partial() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: {\"par").is_empty());
        assert!(p.has_partial());
    }
}
