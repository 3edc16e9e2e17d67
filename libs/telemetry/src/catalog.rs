//! The metrics reference, read from the registries the services register into: every
//! series with its type, labels and help, as Prometheus scrapes it. The registry is
//! encoded with prometheus-client's own OpenMetrics encoder, so the reference names what
//! `/metrics` serves.
//!
//! A label family, or a gauge that has no value yet, has no series until something is
//! counted, and the encoder leaves it out. While a reference is generated, the metrics
//! made through [`family`] (and those that ask [`describing`]) hold one series with
//! default labels, so that each shows; a registered metric that still shows nothing fails
//! the generation rather than missing from the book.

use crate::reference::{escape, table_head, table_row};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::registry::Registry;
use std::cell::Cell;
use std::hash::Hash;

thread_local! {
    static DESCRIBING: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread generates the metrics reference ([`series`]).
pub fn describing() -> bool {
    DESCRIBING.with(Cell::get)
}

/// `family`, with one series of default labels while the reference is generated (and
/// untouched otherwise): every label family a service registers is made through this.
pub fn family<S, M, C>(family: Family<S, M, C>) -> Family<S, M, C>
where
    S: Clone + Hash + Eq + Default,
    C: MetricConstructor<M>,
{
    if describing() {
        drop(family.get_or_create(&S::default()));
    }
    family
}

/// One series of the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name as scraped: a counter's ends in `_total`; a histogram's is the stem of its
    /// `_bucket`, `_sum` and `_count`.
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    pub labels: Vec<String>,
    pub help: String,
}

/// Every series `register` registers, in registration order.
///
/// # Panics
/// When a registered metric shows no series while described: make label families with
/// [`family`], and have a gauge that may be unknown hold a value under [`describing`].
pub fn series(register: impl FnOnce(&mut Registry)) -> Vec<Series> {
    let mut registry = Registry::default();
    DESCRIBING.with(|d| d.set(true));
    register(&mut registry);
    DESCRIBING.with(|d| d.set(false));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("encoding to a String cannot fail");
    let out = parse(&text);
    // Registry's Debug lists every descriptor, shown or not: the only count of what was
    // registered that prometheus-client offers.
    let registered = format!("{registry:?}").matches("Descriptor {").count();
    assert_eq!(
        out.len(),
        registered,
        "a registered metric has no series while described (make label families with \
         ballast_telemetry::catalog::family):\n{text}"
    );
    out
}

/// Reads the OpenMetrics text: one entry per `# TYPE`, with the labels of its first
/// sample (a histogram's `le` left out) and its `# HELP`.
fn parse(text: &str) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut help = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest
                .split_once(' ')
                .map(|(_, h)| h)
                .unwrap_or("")
                .to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            };
            out.push(Series {
                name,
                kind: kind.to_string(),
                labels: Vec::new(),
                help: std::mem::take(&mut help),
            });
        } else if !line.starts_with('#') {
            let Some(last) = out.last_mut() else { continue };
            if !last.labels.is_empty() {
                continue;
            }
            if let Some((_, labels)) = line.split_once('{') {
                let labels = labels.split_once('}').map(|(l, _)| l).unwrap_or("");
                last.labels = labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                    .filter(|k| k != "le")
                    .collect();
            }
        }
    }
    out
}

/// A service's section of the reference: a heading, then one row per series.
pub fn markdown(heading: &str, series: &[Series]) -> String {
    let mut s = format!(
        "## {heading}\n\n{}",
        table_head(&["series", "type", "labels", "meaning"])
    );
    for m in series {
        let labels = m
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&table_row(&[
            &format!("`{}`", m.name),
            &m.kind,
            &labels,
            &escape(&m.help),
        ]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, Default, EncodeLabelSet)]
    struct Labels {
        topic: String,
        outcome: String,
    }

    #[test]
    fn families_show_with_their_labels_and_counters_with_their_suffix() {
        let got = series(|r| {
            let r = r.sub_registry_with_prefix("ballast_x");
            r.register(
                "records",
                "Records, by topic",
                family(Family::<Labels, Counter>::default()),
            );
            r.register("depth", "Entries", Gauge::<i64>::default());
            r.register(
                "latency_seconds",
                "Latency",
                family(Family::<Labels, Histogram>::new_with_constructor(|| {
                    Histogram::new([0.1, 1.0])
                })),
            );
        });
        let row = |n: &str, k: &str, l: &[&str], h: &str| Series {
            name: n.into(),
            kind: k.into(),
            labels: l.iter().map(|s| s.to_string()).collect(),
            help: h.into(),
        };
        assert_eq!(
            got,
            vec![
                row(
                    "ballast_x_records_total",
                    "counter",
                    &["topic", "outcome"],
                    "Records, by topic."
                ),
                row("ballast_x_depth", "gauge", &[], "Entries."),
                row(
                    "ballast_x_latency_seconds",
                    "histogram",
                    &["topic", "outcome"],
                    "Latency."
                ),
            ]
        );
        // Outside a reference, a family stays empty.
        let f = family(Family::<Labels, Counter>::default());
        assert!(f.get(&Labels::default()).is_none());
    }

    #[test]
    #[should_panic(expected = "has no series while described")]
    fn a_family_made_without_the_helper_fails_the_reference() {
        series(|r| {
            r.register("records", "Records", Family::<Labels, Counter>::default());
        });
    }
}
