//! Server-Sent Events, decoded from the bytes of a response as they arrive (the parts of the
//! format the api sends: `event`, `id`, `data`, comments as keep-alives).

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Turns chunks of the body into events; a chunk may end anywhere, even inside a line.
#[derive(Default)]
pub struct Decoder {
    pending: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Decoder {
    /// Events completed by `chunk`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            // A blank line dispatches what was gathered; one without data is no event.
            let event = std::mem::take(&mut self.current);
            let had = std::mem::replace(&mut self.has_data, false);
            return had.then(|| Event {
                event: if event.event.is_empty() {
                    "message".into()
                } else {
                    event.event
                },
                ..event
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.current.event = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_across_chunks_come_out_whole_and_keep_alives_do_not() {
        let body = b": keep-alive\n\nevent: output\nid: 7\ndata: {\"a\":\ndata: 1}\n\r\nevent: result\r\nid: result\r\ndata: {}\r\n\r\n";
        for split in 0..body.len() {
            let mut decoder = Decoder::default();
            let mut events = decoder.push(&body[..split]);
            events.extend(decoder.push(&body[split..]));
            assert_eq!(
                events,
                vec![
                    Event {
                        event: "output".into(),
                        id: Some("7".into()),
                        data: "{\"a\":\n1}".into()
                    },
                    Event {
                        event: "result".into(),
                        id: Some("result".into()),
                        data: "{}".into()
                    },
                ],
                "split at {split}"
            );
        }
    }
}
