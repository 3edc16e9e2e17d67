//! P8's transport floor: `ballast-dev bench-sink`, a gRPC server that accepts connections as
//! the gateway does (TCP_NODELAY, the same TLS acceptor, the gateway's HTTP/2 windows,
//! frame size and request size limit), decodes each `ProduceRequest` and answers every
//! record as written, with no Kafka behind it. Its CPU per MB/s is what receiving the bytes over
//! gRPC costs any gateway before a byte reaches librdkafka; added to the bare producer's,
//! it is the lowest P8 a gRPC front can reach.

use ballast_proto::ingest::v1 as pb;
use pb::ingest_server::{Ingest, IngestServer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use tonic::{Request, Response, Status, Streaming};

/// `ballast-dev bench-sink`: serves until killed.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Where to listen (host:port).
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain: serve TLS (with --key-file).
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key for --cert-file.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
}

/// Answers every record with a Kafka acknowledgement at the next offset of partition 0.
#[derive(Debug, Default)]
struct Sink {
    next_offset: AtomicI64,
}

#[tonic::async_trait]
impl Ingest for Sink {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let records = request.into_inner().records;
        let count = i64::try_from(records.len()).unwrap_or(i64::MAX);
        let first = self.next_offset.fetch_add(count, Ordering::Relaxed);
        let results = records
            .into_iter()
            .zip(first..)
            .map(|(record, offset)| pb::RecordResult {
                // A gateway assigns an id to every record without one; so does the sink.
                message_id: if record.message_id.is_empty() {
                    ballast_core::new_message_id()
                } else {
                    record.message_id
                },
                outcome: Some(pb::record_result::Outcome::Kafka(pb::KafkaAck {
                    partition: 0,
                    offset,
                })),
            })
            .collect();
        Ok(Response::new(pb::ProduceResponse { results }))
    }

    type ProduceStreamStream = futures::stream::Empty<Result<pb::ProduceResponse, Status>>;

    async fn produce_stream(
        &self,
        _request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        Err(Status::unimplemented("the bench sink answers Produce only"))
    }
}

pub async fn sink_process(args: SinkArgs) -> anyhow::Result<()> {
    let limits = ballast_gateway::Limits::default();
    let tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => Some(ballast_security::TlsServer::load(
            &ballast_security::TlsConfig {
                cert_file: Some(cert.clone()),
                key_file: Some(key.clone()),
                ..Default::default()
            },
        )?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(limits.grpc_stream_window_bytes))
        .initial_connection_window_size(Some(limits.grpc_stream_window_bytes.saturating_mul(8)))
        // A batch that fits one frame is read in one piece.
        .max_frame_size(Some(limits.grpc_max_frame_bytes))
        .add_service(
            IngestServer::new(Sink::default()).max_decoding_message_size(limits.max_request_bytes),
        )
        .serve_with_incoming(ballast_telemetry::incoming(listener, None, tls))
        .await?;
    Ok(())
}
