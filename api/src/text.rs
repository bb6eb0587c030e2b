//! Text for error messages.

/// Keeps error messages short when a client sends a huge string.
pub fn truncate_for_message(s: &str) -> String {
    const LIMIT: usize = 80;
    if s.len() <= LIMIT {
        return s.to_owned();
    }
    let mut end = LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
