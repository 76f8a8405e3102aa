//! Server-Sent Events, read incrementally: the agent's own `GET /events` (for
//! `events --follow`) and the answers of MCP servers (for the MCP probe). No IO: the caller
//! feeds bytes as they arrive, in chunks cut anywhere.

/// One event as received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// The `id:` field, as sent.
    pub id: Option<String>,
    /// The `event:` field; empty for a plain message.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Splits a byte stream into events. Lines end with `\n` or `\r\n`; a blank line ends an
/// event; an event without `data:` is skipped (comments, keep-alives); other fields are
/// ignored.
#[derive(Default)]
pub struct Parser {
    /// Bytes not yet split into lines.
    pending: Vec<u8>,
    id: Option<String>,
    event: String,
    data: Vec<String>,
}

impl Parser {
    /// Takes the next chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Message> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        // Splitting on b'\n' is safe in UTF-8: no multi-byte character contains it.
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + end];
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
            let line = line.into_owned();
            start += end + 1;
            if line.is_empty() {
                out.extend(self.dispatch());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.id = Some(value.to_owned()),
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        self.pending.drain(..start);
        out
    }

    /// The stream has ended: an event cut off before its closing blank line still counts.
    pub fn finish(&mut self) -> Option<Message> {
        if !self.pending.is_empty() {
            let mut out = self.push(b"\n");
            if out.is_empty() {
                return self.dispatch();
            }
            return out.pop();
        }
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<Message> {
        let id = self.id.take();
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(Message { id, event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunk_boundaries() {
        let mut p = Parser::default();
        assert!(p.push(b": keep-alive\n\nid: 7\nevent: run.st").is_empty());
        let got = p.push(b"arted\ndata: {\"a\":1}\n\nid: 8\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            got,
            [
                Message {
                    id: Some("7".into()),
                    event: "run.started".into(),
                    data: r#"{"a":1}"#.into()
                },
                Message {
                    id: Some("8".into()),
                    event: String::new(),
                    data: "x\ny".into()
                }
            ]
        );
    }

    #[test]
    fn an_event_cut_off_by_the_end_of_the_stream_still_counts() {
        let mut p = Parser::default();
        assert!(p.push(b"data: {\"b\":2}").is_empty());
        assert_eq!(p.finish().unwrap().data, r#"{"b":2}"#);
        let mut p = Parser::default();
        assert!(p.push(b"data: one\n").is_empty());
        assert_eq!(p.finish().unwrap().data, "one");
        assert_eq!(Parser::default().finish(), None);
    }
}
