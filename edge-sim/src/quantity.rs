//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`), as integers the stage engine can add up.

/// Parse a quantity into thousandths of its unit (`"500m"` → 500, `"2"` → 2000, `"1Ki"` → 1_024_000).
/// `None` for text that is not a quantity.
pub fn parse_milli(text: &str) -> Option<u128> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier_milli: u128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "Ki" => 1_024_000,
        "Mi" => 1_024 * 1_024_000,
        "Gi" => 1_024 * 1_024 * 1_024_000,
        "Ti" => 1_024 * 1_024 * 1_024 * 1_024_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
    // Round up: a request of 0.0001 cores still needs a milli-core.
    Some(whole * multiplier_milli + (fraction * multiplier_milli).div_ceil(scale))
}

/// CPU in milli-cores (`"1.5"` → 1500).
pub fn cpu_millis(text: &str) -> Option<u64> {
    parse_milli(text).map(|m| m as u64)
}

/// Memory in MiB, rounded up (`"1Gi"` → 1024, `"1G"` → 954).
pub fn memory_mib(text: &str) -> Option<u64> {
    parse_milli(text).map(|milli_bytes| milli_bytes.div_ceil(1_000 * 1_024 * 1_024) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_quantities_become_integers() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("0.0001"), Some(1));
        assert_eq!(memory_mib("128Mi"), Some(128));
        assert_eq!(memory_mib("1Gi"), Some(1024));
        assert_eq!(memory_mib("1G"), Some(954));
        assert_eq!(memory_mib("1048576"), Some(1));
        assert_eq!(cpu_millis("lots"), None);
        assert_eq!(cpu_millis("."), None);
    }
}
