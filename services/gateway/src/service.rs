//! The `ballast.ingest.v1.Ingest` gRPC handlers: per-request limits, conversion, metrics;
//! the write path does the rest.

use crate::config::Limits;
use crate::convert;
use crate::metrics::GatewayMetrics;
use ballast_core::{ErrorCode, RecordError};
use ballast_produce::{Produced, Writer};
use ballast_proto::ingest::v1 as pb;
use ballast_security::{Access, Action, Caller};
use ballast_telemetry::trace;
use futures::stream::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// The span of one request (or one batch of a stream), a child of the caller's trace
/// context when its metadata carries a `traceparent`.
fn request_span(metadata: &tonic::metadata::MetadataMap, records: usize) -> tracing::Span {
    let span = tracing::debug_span!(target: trace::TARGET, "ballast.produce", records);
    trace::continue_from_metadata(&span, metadata);
    span
}

#[derive(Debug, Clone)]
pub(crate) struct IngestService {
    writer: Arc<Writer>,
    limits: Arc<Limits>,
    metrics: GatewayMetrics,
    access: Access,
}

impl IngestService {
    pub(crate) fn new(
        writer: Arc<Writer>,
        limits: Limits,
        metrics: GatewayMetrics,
        access: Access,
    ) -> Self {
        Self {
            writer,
            limits: Arc::new(limits),
            metrics,
            access,
        }
    }

    /// Answers every record of a batch, in request order. Records past
    /// `max_records_per_request`, outside the caller's grant or malformed fail alone; the
    /// rest go to the write path as one batch.
    async fn produce_batch(&self, req: pb::ProduceRequest, caller: &Caller) -> pb::ProduceResponse {
        let max = self.limits.max_records_per_request;
        let total = req.records.len();
        let mut answers: Vec<Option<Produced>> = Vec::with_capacity(total);
        let mut batch = Vec::with_capacity(total.min(max));
        for (i, rec) in req.records.into_iter().enumerate() {
            let refused = if i >= max {
                // No topic label: the request as a whole was refused.
                Some(Produced::rejected(
                    rec.message_id,
                    String::new(),
                    RecordError::new(
                        ErrorCode::ResourceExhausted,
                        format!(
                            "request has {total} records; the limit is {max} (limits.max_records_per_request)"
                        ),
                    ),
                ))
            } else if !caller.allows(Action::Produce { topic: &rec.topic }) {
                // A record to a topic outside the caller's grant fails alone.
                let denial = caller.denial(Action::Produce { topic: &rec.topic });
                Some(Produced::rejected(
                    rec.message_id,
                    rec.topic,
                    RecordError::new(ErrorCode::PermissionDenied, denial),
                ))
            } else {
                match convert::record(rec) {
                    Ok(rec) => {
                        batch.push(rec);
                        None
                    }
                    Err(rejected) => Some(*rejected),
                }
            };
            answers.push(refused);
        }
        let mut written = self.writer.write_batch(batch).await.into_iter();
        let produced: Vec<Produced> = answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| written.next().expect("one answer per record written")))
            .collect();
        self.metrics.record_batch(&produced);
        pb::ProduceResponse {
            results: produced.into_iter().map(convert::result).collect(),
        }
    }
}

type ResponseStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ProduceResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let caller = self.access.authenticate(&request)?;
        let span = request_span(request.metadata(), request.get_ref().records.len());
        Ok(Response::new(
            self.produce_batch(request.into_inner(), &caller)
                .instrument(span)
                .await,
        ))
    }

    type ProduceStreamStream = ResponseStream;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = Arc::new(self.access.authenticate(&request)?);
        let service = self.clone();
        let window = self.limits.stream_inflight_batches;
        let metadata = request.metadata().clone();
        let incoming = request.into_inner();
        let out = incoming
            .map(move |item| {
                let service = service.clone();
                let metadata = metadata.clone();
                let caller = caller.clone();
                async move {
                    let req = item?;
                    // Each batch under the policy and tokens of now: a reload or a revoked
                    // token reaches a stream that is already open.
                    let caller = service.access.refresh(&caller)?;
                    let span = request_span(&metadata, req.records.len());
                    Ok(service.produce_batch(req, &caller).instrument(span).await)
                }
            })
            .buffered(window)
            // A broken inbound stream ends the outbound one after reporting it.
            .scan(false, |failed, item| {
                let out = if *failed { None } else { Some(item) };
                if matches!(out, Some(Err(_))) {
                    *failed = true;
                }
                futures::future::ready(out)
            });
        Ok(Response::new(Box::pin(out) as ResponseStream))
    }
}
