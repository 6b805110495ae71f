//! Small helpers to read cells: numbers with messages that name the column, and header maps.
//!
//! The CSV files of the supported traces have no quoting, so a plain split on `,` is exact.

/// Parses a whole number; the error names the column and shows the value.
pub(crate) fn u64_cell(value: &str, column: &str) -> Result<u64, String> {
    let v = value.trim();
    v.parse::<u64>().map_err(|_| {
        if v.is_empty() {
            format!("{column}: empty")
        } else {
            format!("{column}: not a whole number >= 0: {v:?}")
        }
    })
}

/// Parses a signed whole number.
pub(crate) fn i64_cell(value: &str, column: &str) -> Result<i64, String> {
    let v = value.trim();
    v.parse::<i64>().map_err(|_| {
        if v.is_empty() {
            format!("{column}: empty")
        } else {
            format!("{column}: not a whole number: {v:?}")
        }
    })
}

/// Parses a finite decimal number.
pub(crate) fn f64_cell(value: &str, column: &str) -> Result<f64, String> {
    let v = value.trim();
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ if v.is_empty() => Err(format!("{column}: empty")),
        _ => Err(format!("{column}: not a number: {v:?}")),
    }
}

/// Seconds to milliseconds, refusing overflow.
pub(crate) fn secs_to_ms(secs: i64, column: &str) -> Result<i64, String> {
    secs.checked_mul(1000)
        .ok_or_else(|| format!("{column}: {secs} s is out of range"))
}

/// A header's column positions for a list of wanted columns, matched by trimmed, lower-cased
/// name against each wanted column's accepted names.
pub(crate) fn column_positions<const N: usize>(
    header: &str,
    wanted: [(&str, &[&str]); N],
) -> Result<[usize; N], String> {
    let names: Vec<String> = header
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let mut out = [0usize; N];
    let mut missing = Vec::new();
    for (slot, (label, aliases)) in out.iter_mut().zip(wanted.iter()) {
        match names.iter().position(|n| aliases.iter().any(|a| n == a)) {
            Some(i) => *slot = i,
            None => missing.push(*label),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "header lacks column(s) {} (header: {:?})",
            missing.join(", "),
            clip(header, 200)
        ))
    }
}

/// At most `max` characters of `s`, for messages.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_name_their_column() {
        assert_eq!(u64_cell(" 42 ", "cpu"), Ok(42));
        assert_eq!(u64_cell("", "cpu"), Err("cpu: empty".into()));
        assert_eq!(
            u64_cell("-3", "cpu"),
            Err("cpu: not a whole number >= 0: \"-3\"".into())
        );
        assert_eq!(i64_cell("-3", "t"), Ok(-3));
        assert_eq!(f64_cell("0.5", "m"), Ok(0.5));
        assert!(f64_cell("NaN", "m").is_err());
        assert!(f64_cell("inf", "m").is_err());
        assert!(secs_to_ms(i64::MAX / 10, "t").is_err());
    }

    #[test]
    fn header_columns_are_matched_by_trimmed_lowercase_name() {
        let h = "task_create_time, Task_End_Time ,job_id";
        let pos = column_positions(
            h,
            [("end", &["task_end_time"][..]), ("job", &["job_id"][..])],
        );
        assert_eq!(pos, Ok([1, 2]));
        let err = column_positions(h, [("status", &["status"][..])]).unwrap_err();
        assert!(err.starts_with("header lacks column(s) status"), "{err}");
    }
}
