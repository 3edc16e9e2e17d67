//! The `ballast.ingest.v1.Ingest` gRPC handlers.

use crate::produce::Producer;
use ballast_core::{ErrorCode, RecordError};
use ballast_proto::ingest::v1 as pb;
use futures::stream::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub(crate) struct IngestService {
    producer: Arc<Producer>,
}

impl IngestService {
    pub(crate) fn new(producer: Arc<Producer>) -> Self {
        Self { producer }
    }
}

/// Answers every record of a batch, concurrently, in request order. Records past
/// `max_records_per_request` fail alone; the rest go on.
pub(crate) async fn produce_batch(
    producer: &Producer,
    req: pb::ProduceRequest,
) -> pb::ProduceResponse {
    let max = producer.limits().max_records_per_request;
    let total = req.records.len();
    let futures = req.records.into_iter().enumerate().map(|(i, rec)| async move {
        if i >= max {
            producer.reject(
                rec,
                RecordError::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "request has {total} records; the limit is {max} (limits.max_records_per_request)"
                    ),
                ),
            )
        } else {
            producer.produce(rec).await
        }
    });
    let produced = futures::future::join_all(futures).await;
    producer.metrics().record_batch(&produced);
    pb::ProduceResponse {
        results: produced.into_iter().map(|p| p.result).collect(),
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
        Ok(Response::new(
            produce_batch(&self.producer, request.into_inner()).await,
        ))
    }

    type ProduceStreamStream = ResponseStream;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let producer = self.producer.clone();
        let window = producer.limits().stream_inflight_batches;
        let incoming = request.into_inner();
        let out = incoming
            .map(move |item| {
                let producer = producer.clone();
                async move {
                    match item {
                        Ok(req) => Ok(produce_batch(&producer, req).await),
                        Err(status) => Err(status),
                    }
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
