//! Formatting of the bench's figures: the final table and the one-line summaries. Pure.

/// One line of the final table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub measured: String,
    pub target: String,
    pub kamailio: String,
    pub sipp: String,
}

const HEADER: [&str; 5] = [
    "",
    "measured",
    "target",
    "Kamailio 5.6",
    "sipp↔sipp (this run)",
];

/// The rows under a header, the first column left-aligned and the others right-aligned.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[&str; 5]> = std::iter::once(HEADER)
        .chain(rows.iter().map(|r| {
            [
                r.label.as_str(),
                r.measured.as_str(),
                r.target.as_str(),
                r.kamailio.as_str(),
                r.sipp.as_str(),
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    cells
        .iter()
        .map(|row| {
            let mut line = format!("{:<w$}", row[0], w = widths[0]);
            for (cell, width) in row.iter().zip(&widths).skip(1) {
                line.push_str(&format!("  {cell:>width$}"));
            }
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A sustained rate: the rate held, or why there is none (`lowest_hold`: the lowest rate a
/// failed hold tried; `lowest`: the ladder's first rung).
pub fn held_rate(held: Option<u32>, lowest_hold: Option<u32>, lowest: u32) -> String {
    match (held, lowest_hold) {
        (Some(rate), _) => format!("{rate}/s"),
        (None, Some(hold)) => format!("none held (down to {hold}/s)"),
        (None, None) => format!("< {lowest}/s"),
    }
}

/// Up to `max` counted kinds, one per line, indented.
pub fn kinds(list: &[(String, usize)], max: usize) -> String {
    let mut lines: Vec<String> = list
        .iter()
        .take(max)
        .map(|(kind, n)| format!("      {n:>7} × {kind}"))
        .collect();
    let rest: usize = list.iter().skip(max).map(|(_, n)| n).sum();
    if rest > 0 {
        lines.push(format!("      {rest:>7} × (other kinds)"));
    }
    lines.join("\n")
}

pub mod checks {
    //! Specifications of the formatting, run by `cargo test --benches`.
    use super::*;

    /// Every check, by name.
    pub const ALL: &[(&str, fn())] = crate::named![
        the_table_aligns_its_columns,
        a_missing_rate_says_why,
        kinds_beyond_the_first_are_summed,
    ];

    fn the_table_aligns_its_columns() {
        let rows = [
            Row {
                label: "calls/s".into(),
                measured: "1500/s".into(),
                target: "≥ 4000/s".into(),
                kamailio: "5500/s".into(),
                sipp: "9000/s".into(),
            },
            Row {
                label: "RSS at 20000 calls".into(),
                measured: "310 MiB".into(),
                target: "≤ 1024 MiB".into(),
                kamailio: "—".into(),
                sipp: "—".into(),
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Right-aligned: every line ends its "measured" column at the same character.
        let end_of = |line: &str, cell: &str| {
            line.find(cell)
                .map(|i| line[..i + cell.len()].chars().count())
        };
        assert_eq!(end_of(lines[1], "1500/s"), end_of(lines[2], "310 MiB"));
        assert!(lines[0].contains("Kamailio 5.6"));
    }

    fn a_missing_rate_says_why() {
        assert_eq!(held_rate(Some(3000), Some(3000), 250), "3000/s");
        assert_eq!(held_rate(None, Some(500), 250), "none held (down to 500/s)");
        assert_eq!(held_rate(None, None, 250), "< 250/s");
    }

    fn kinds_beyond_the_first_are_summed() {
        let list = [
            ("a".to_string(), 5),
            ("b".to_string(), 3),
            ("c".to_string(), 2),
        ];
        let text = kinds(&list, 2);
        assert!(text.contains("5 × a"));
        assert!(text.contains("2 × (other kinds)"));
        assert!(!text.contains("× c"));
    }
}
