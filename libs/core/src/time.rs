//! Wall-clock time as the wire and the queues carry it.

/// Milliseconds since the Unix epoch, by this host's clock; 0 for a clock set before 1970.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_ms_is_after_2026() {
        // 2026-01-01T00:00:00Z
        assert!(super::unix_ms() > 1_767_225_600_000);
    }
}
