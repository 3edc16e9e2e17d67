//! The torture run as a self-contained HTML page: the verdict, the fault timeline (the
//! demo's SVG: acknowledgement rates with each fault as a band), the table per fault kind
//! and the list of faults as played.

use crate::demo::report::{esc, figure_rows, timeline_svg, Phase, Report, Sample, STYLE};
use std::fmt::Write;

/// One row of the table per fault kind, already formatted.
#[derive(Debug)]
pub struct KindRow {
    pub kind: String,
    pub cells: Vec<String>,
}

#[derive(Debug)]
pub struct TortureReport<'a> {
    pub seed: u64,
    pub header: &'a [&'a str],
    pub kinds: Vec<KindRow>,
    pub totals: Vec<(String, String)>,
    /// (start s, end s, kind, detail)
    pub faults: Vec<(f64, f64, String, String)>,
    pub violations: Vec<String>,
    pub samples: &'a [Sample],
    pub end: f64,
}

pub fn html(r: &TortureReport<'_>) -> String {
    // Bands: each fault from its start to its end, calm between them.
    let mut phases = vec![Phase {
        name: String::new(),
        start: 0.0,
        sent: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    }];
    for (start, end, kind, _) in &r.faults {
        for (name, at) in [(kind.clone(), *start), (String::new(), *end)] {
            phases.push(Phase {
                name,
                start: at,
                sent: 0,
                p50_ms: 0.0,
                p99_ms: 0.0,
            });
        }
    }
    let svg = timeline_svg(&Report {
        rows: vec![],
        lost: 0,
        phases,
        samples: r.samples.to_vec(),
        end: r.end,
    });
    let mut kinds = String::from("<tr>");
    for h in r.header {
        let _ = write!(kinds, "<th>{}</th>", esc(h));
    }
    kinds.push_str("</tr>");
    for row in &r.kinds {
        let _ = write!(kinds, "<tr><td>{}</td>", esc(&row.kind));
        for c in &row.cells {
            let _ = write!(kinds, "<td class=n>{}</td>", esc(c));
        }
        kinds.push_str("</tr>");
    }
    let totals = figure_rows(&r.totals);
    let mut faults = String::new();
    for (start, end, kind, detail) in &r.faults {
        let _ = write!(
            faults,
            "<tr><td class=n>{start:.1}s</td><td class=n>{end:.1}s</td><td>{}</td><td>{}</td></tr>",
            esc(kind),
            esc(detail)
        );
    }
    let verdict = if r.violations.is_empty() {
        "<p class=ok>Every invariant holds: acknowledged &rArr; in Kafka; processed &rArr; sent; \
         none processed twice; acknowledged &rArr; processed; one final outcome per record.</p>"
            .to_string()
    } else {
        let mut v = String::from("<p class=bad>Broken invariants:</p><ul>");
        for line in &r.violations {
            let _ = write!(v, "<li>{}</li>", esc(line));
        }
        v.push_str("</ul>");
        v
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ballast torture run, seed {seed}</title>
{STYLE}</head><body>
<h1>Ballast torture run, seed {seed}</h1>
<p>Every service as its own process (mock cluster, two gateways in az-a and az-b, two retry
workers on PostgreSQL behind a cuttable proxy, dedup on redis-server with an append-only
file, topology, a dedup-guarded consumer group) under a fault schedule drawn from the seed.
Clients resend with the same message_id on retryable errors. Replay with
<code>ballast-dev torture --seed {seed}</code> and the same flags.</p>
{verdict}
<h2>Fault timeline</h2>
<p>Acknowledgements per second (Kafka, failover) and retryable errors per second; each
fault is a band.</p>
{svg}
<h2>Per fault kind</h2>
<p>Each record counts under the fault active when it was first sent; latency runs from
the first send to the acknowledgement, retries included.</p>
<table>{kinds}</table>
<h2>Totals</h2>
<table>{totals}</table>
<h2>Faults as played</h2>
<table><tr><th>start</th><th>end</th><th>fault</th><th>detail</th></tr>{faults}</table>
</body></html>
"#,
        seed = r.seed,
    )
}
