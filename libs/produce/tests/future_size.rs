//! The write future stays small. A gateway request is one batch future, but the retry
//! worker writes record by record, many at once; when a rare path (a metadata fetch with
//! TLS and SASL, a failover enqueue) was inlined, each record's future was 14 KB and
//! copying them took a third of the gateway's CPU. Rare paths are boxed; this keeps it so.
#![recursion_limit = "256"]

#[test]
fn a_record_write_future_is_under_two_kilobytes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let writer = ballast_produce::Writer::new(
            &Default::default(),
            Default::default(),
            Default::default(),
            ballast_produce::WriteMetrics::register(
                &mut prometheus_client::registry::Registry::default(),
            ),
            None,
        )
        .unwrap();
        let future = writer.write(ballast_produce::Record::default());
        let size = std::mem::size_of_val(&future);
        assert!(size < 2048, "the write future is {size} bytes");
    });
}
