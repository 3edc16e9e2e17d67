//! The demo's self-contained HTML report: the audit, the phases, and an SVG timeline of
//! throughput, failover rate and every partition's breaker state.

use std::fmt::Write;

/// One sample of the running demo.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// Cumulative records acknowledged via Kafka, via failover, and rejected.
    pub kafka: usize,
    pub failover: usize,
    pub rejected: usize,
    /// Per partition: 0 closed, 1 half-open, 2 open, 3 held for a draining broker.
    pub breakers: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub start: f64,
    pub sent: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<(String, String)>,
    pub lost: usize,
    pub phases: Vec<Phase>,
    pub samples: Vec<Sample>,
    pub end: f64,
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 960.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const CHART_TOP: f64 = 30.0;
const CHART_H: f64 = 200.0;
const ROW_H: f64 = 16.0;
const PHASE_COLORS: [&str; 6] = [
    "#f4f6f8", "#fff4e0", "#fdecea", "#f3e8fd", "#fde7e7", "#e8f5e9",
];
const STATE_COLORS: [&str; 4] = ["#43a047", "#fbc02d", "#e53935", "#8e24aa"];
const STATE_NAMES: [&str; 4] = ["closed", "half-open", "open", "held: draining"];

/// Records per second over a trailing one-second window at each sample (a stall that ends
/// with a burst of answers would otherwise dwarf everything else): (t, kafka, failover,
/// rejected).
fn rates(samples: &[Sample]) -> Vec<(f64, f64, f64, f64)> {
    let mut from = 0;
    samples
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, cur)| {
            while from + 1 < i && samples[from + 1].t <= cur.t - 1.0 {
                from += 1;
            }
            let old = &samples[from];
            let dt = (cur.t - old.t).max(1e-3);
            (
                cur.t,
                (cur.kafka - old.kafka) as f64 / dt,
                (cur.failover - old.failover) as f64 / dt,
                (cur.rejected - old.rejected) as f64 / dt,
            )
        })
        .collect()
}

/// The SVG timeline.
pub fn timeline_svg(r: &Report) -> String {
    let partitions = r.samples.first().map(|s| s.breakers.len()).unwrap_or(0);
    let strip_top = CHART_TOP + CHART_H + 40.0;
    let h = strip_top + partitions as f64 * ROW_H + 50.0;
    let end = r.end.max(1.0);
    let x = |t: f64| LEFT + (t / end).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let rates = rates(&r.samples);
    let peak = rates
        .iter()
        .map(|&(_, k, f, j)| k.max(f).max(j))
        .fold(1.0f64, f64::max);
    let y = |v: f64| CHART_TOP + CHART_H - (v / peak) * CHART_H;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    // Phase bands across the chart and the strip.
    for (i, p) in r.phases.iter().enumerate() {
        let until = r.phases.get(i + 1).map(|n| n.start).unwrap_or(end);
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{CHART_TOP}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" fill="#333">{}</text>"##,
            x(p.start),
            (x(until) - x(p.start)).max(0.0),
            h - CHART_TOP - 30.0,
            PHASE_COLORS[i % PHASE_COLORS.len()],
            x(p.start) + 3.0,
            CHART_TOP - 8.0,
            esc(&p.name)
        );
    }
    // Axes.
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#555"/><line x1="{LEFT}" y1="{CHART_TOP}" x2="{LEFT}" y2="{:.1}" stroke="#555"/>"##,
        CHART_TOP + CHART_H,
        W - RIGHT,
        CHART_TOP + CHART_H,
        CHART_TOP + CHART_H
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = peak * frac;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{:.0}/s</text>"##,
            LEFT - 4.0,
            y(v) + 4.0,
            v
        );
    }
    let step = if end > 60.0 { 10.0 } else { 5.0 };
    let mut t = 0.0;
    while t <= end {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
            x(t),
            CHART_TOP + CHART_H + 14.0
        );
        t += step;
    }
    // Rate lines.
    for (idx, color, label) in [
        (1, "#1e88e5", "acked via kafka"),
        (2, "#fb8c00", "acked via failover"),
        (3, "#c62828", "rejected"),
    ] {
        let pts: Vec<String> = rates
            .iter()
            .map(|r| {
                let v = match idx {
                    1 => r.1,
                    2 => r.2,
                    _ => r.3,
                };
                format!("{:.1},{:.1}", x(r.0), y(v))
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"><title>{label}</title></polyline>"#,
            pts.join(" ")
        );
    }
    // Legend for the lines.
    for (i, (color, label)) in [
        ("#1e88e5", "acked via kafka (records/s)"),
        ("#fb8c00", "acked via failover (records/s)"),
        ("#c62828", "rejected (records/s)"),
    ]
    .iter()
    .enumerate()
    {
        let lx = LEFT + 10.0 + i as f64 * 220.0;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            CHART_TOP + CHART_H + 24.0,
            lx + 16.0,
            CHART_TOP + CHART_H + 28.0
        );
    }
    // Breaker strip: one row per partition.
    for p in 0..partitions {
        let row_y = strip_top + p as f64 * ROW_H;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">p{p}</text>"##,
            LEFT - 4.0,
            row_y + ROW_H - 4.0
        );
        for w in r.samples.windows(2) {
            let state = w[0].breakers.get(p).copied().unwrap_or(0) as usize;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{row_y:.1}" width="{:.2}" height="{:.1}" fill="{}"/>"#,
                x(w[0].t),
                (x(w[1].t) - x(w[0].t)).max(0.5),
                ROW_H - 2.0,
                STATE_COLORS[state.min(3)]
            );
        }
    }
    let legend_y = strip_top + partitions as f64 * ROW_H + 16.0;
    for (i, (color, name)) in STATE_COLORS.iter().zip(STATE_NAMES).enumerate() {
        let lx = LEFT + i as f64 * 150.0;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{legend_y:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">breaker {name}</text>"#,
            lx + 16.0,
            legend_y + 10.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The whole report as one HTML document with no external resources.
/// The stylesheet every report page shares.
pub(crate) const STYLE: &str = "<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2e7d32; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
</style>";

/// Table rows of a name and a right-aligned figure.
pub(crate) fn figure_rows(rows: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=n>{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    out
}

pub fn html(r: &Report) -> String {
    let rows = figure_rows(&r.rows);
    let mut phases = String::new();
    for p in &r.phases {
        let _ = write!(
            phases,
            "<tr><td>{}</td><td class=n>{:.1}s</td><td class=n>{}</td><td class=n>{:.1}</td><td class=n>{:.1}</td></tr>",
            esc(&p.name),
            p.start,
            p.sent,
            p.p50_ms,
            p.p99_ms
        );
    }
    let verdict = if r.lost == 0 {
        r#"<p class=ok>No acknowledged record was lost.</p>"#.to_string()
    } else {
        format!(
            r#"<p class=bad>{} acknowledged record(s) were lost.</p>"#,
            r.lost
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ballast demo report</title>
{STYLE}</head><body>
<h1>Ballast demo</h1>
<p>A 3-broker mock Kafka cluster (racks az-a, az-b, az-c) under mixed keyed and unkeyed load
while a spot interruption plays out: a draining notice, the broker dies, a partition loses
its leader, the whole cluster goes out, recovery. Records Kafka could not take went to the
failover queue and the retry workers put them back; a dedup-guarded consumer then read
everything.</p>
{verdict}
<h2>Timeline</h2>
{svg}
<h2>Audit</h2>
<table>{rows}</table>
<h2>Phases</h2>
<table><tr><th>phase</th><th>starts</th><th>sent</th><th>p50 batch ms</th><th>p99 batch ms</th></tr>{phases}</table>
</body></html>
"#,
        svg = timeline_svg(r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_draws_rates_phases_and_breakers() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t: i as f64 * 0.5,
                kafka: i * 100,
                failover: if i > 5 { (i - 5) * 50 } else { 0 },
                rejected: 0,
                breakers: vec![0, if i > 3 { 3 } else { 0 }, if i > 6 { 2 } else { 0 }],
            })
            .collect();
        let r = Report {
            rows: vec![("sent <all>".into(), "1000".into())],
            lost: 0,
            phases: vec![
                Phase {
                    name: "steady".into(),
                    start: 0.0,
                    sent: 500,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                },
                Phase {
                    name: "broker dies".into(),
                    start: 2.5,
                    sent: 500,
                    p50_ms: 1.5,
                    p99_ms: 9.0,
                },
            ],
            samples,
            end: 4.5,
        };
        let page = html(&r);
        assert!(page.contains("<svg") && page.contains("</svg>"));
        assert!(page.contains("sent &lt;all&gt;"), "text is escaped");
        assert_eq!(page.matches("<polyline").count(), 3);
        assert!(page.contains(STATE_COLORS[3]) && page.contains(STATE_COLORS[2]));
        assert!(page.contains(">broker dies</text>"));
        assert!(page.contains("No acknowledged record was lost"));
        assert!(!page.contains("http://") || page.contains("http://www.w3.org/2000/svg"));
    }
}
