//! What the fuzz targets share: how one fuzzer input becomes the parts a parser takes.

/// The input as text, or `None` when it is not UTF-8 (every parser here takes text: a
/// WebSocket text frame, a Socket.IO packet and a peer line are UTF-8 by their protocols, and
/// the edges refuse anything else before a parser sees it).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An input read as `EVENT\nDATA`: an event name and its payload text (the payload is the
/// whole input, with an empty event, when there is no newline).
pub fn event_and_data(data: &[u8]) -> Option<(&str, &str)> {
    let s = text(data)?;
    Some(s.split_once('\n').unwrap_or(("", s)))
}

/// The payload as JSON, when it is.
pub fn json(s: &str) -> Option<serde_json::Value> {
    serde_json::from_str(s).ok()
}
