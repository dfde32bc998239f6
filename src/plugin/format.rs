//! Output of the kubectl plugin: aligned tables as kubectl prints them, durations in kubectl's
//! short form, and CSV (RFC 4180) for spreadsheets. Pure functions.

use jiff::Timestamp;

/// A table: a header row and rows of cells, printed as kubectl prints `get` (columns left
/// aligned, three spaces apart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra cells are dropped).
    pub fn push(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.into_iter().map(|c| printable(&c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let width = |c: &str| c.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i < last {
                    let pad = widths[i] - width(cell) + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `s` with control characters (newlines, tabs, terminal escape sequences) shown as `?`, so
/// that a name a provider returned can't break a table or drive the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A duration in kubectl's short form (as in the AGE column): `45s`, `4m5s`, `47m`, `5h10m`,
/// `30h`, `3d4h`, `12d`, `2y30d`, `9y`.
pub fn short_duration(seconds: u64) -> String {
    let (s, m, h) = (seconds, seconds / 60, seconds / 3600);
    let d = h / 24;
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        pair(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        pair(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        pair(d, "d", h % 24, "h")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        pair(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

/// `t` relative to `now`: `47m` when ahead, `5m ago` when past, `-` when unknown.
pub fn relative(now: Timestamp, t: Option<Timestamp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let seconds = t.as_second() - now.as_second();
    if seconds >= 0 {
        short_duration(seconds.unsigned_abs())
    } else {
        format!("{} ago", short_duration(seconds.unsigned_abs()))
    }
}

/// One CSV record (RFC 4180): fields with a comma, a quote or a line break are quoted, quotes
/// doubled. A field that a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return) gets a leading `'`, as spreadsheets expect for text: an
/// access review opened in one can't run what a workspace's name says.
pub fn csv_record(fields: &[&str]) -> String {
    let mut line = fields
        .iter()
        .map(|f| {
            let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{f}")
            } else {
                f.to_string()
            };
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        for (secs, want) in [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (245, "4m5s"),
            (600, "10m"),
            (47 * 60 + 59, "47m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 10 * 60, "5h10m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (7 * 86400, "7d"),
            (12 * 86400, "12d"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(short_duration(secs), want, "{secs}");
        }
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        assert_eq!(relative(now, t("2026-11-23T10:47:00Z")), "47m");
        assert_eq!(relative(now, t("2026-11-23T09:55:00Z")), "5m ago");
        assert_eq!(relative(now, None), "-");
    }

    #[test]
    fn tables_align_and_neutralise_control_characters() {
        let mut t = Table::new(&["NAME", "READY", "MESSAGE"]);
        t.push(vec!["a".into(), "True".into(), "ok".into()]);
        t.push(vec![
            "longer-name".into(),
            "False".into(),
            "bad\n\u{1b}[31mred".into(),
        ]);
        t.push(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "NAME          READY   MESSAGE\n\
             a             True    ok\n\
             longer-name   False   bad??[31mred\n\
             short\n"
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_record(&["a", "b c", ""]), "a,b c,\n");
        assert_eq!(
            csv_record(&["x,y", "say \"hi\"", "two\nlines"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\n"
        );
        assert_eq!(
            csv_record(&["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "a=b"]),
            "\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@SUM(A1),a=b\n"
        );
    }
}
