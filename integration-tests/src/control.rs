//! `ballast.dev.v1.DevControl`: drives the embedded mock cluster over gRPC.

use ballast_core::ErrorCode;
use ballast_kafka::{EmbeddedCluster, MockApi};
use ballast_proto::dev::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct DevControlService {
    cluster: Arc<EmbeddedCluster>,
}

impl DevControlService {
    pub fn new(cluster: Arc<EmbeddedCluster>) -> Self {
        Self { cluster }
    }
}

fn reply(
    res: Result<(), ballast_kafka::Error>,
    msg: String,
) -> Result<Response<pb::ControlReply>, Status> {
    match res {
        Ok(()) => {
            tracing::info!(action = %msg, "dev control");
            Ok(Response::new(pb::ControlReply { message: msg }))
        }
        Err(e) => Err(ErrorCode::InvalidArgument.status(e.to_string())),
    }
}

fn who(id: i32) -> String {
    if id == -1 {
        "all brokers".into()
    } else {
        format!("broker {id}")
    }
}

#[tonic::async_trait]
impl pb::dev_control_server::DevControl for DevControlService {
    async fn broker_down(
        &self,
        request: Request<pb::BrokerRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        let id = request.into_inner().broker_id;
        reply(
            self.cluster.broker_down(id).await,
            format!("{} down", who(id)),
        )
    }

    async fn broker_up(
        &self,
        request: Request<pb::BrokerRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        let id = request.into_inner().broker_id;
        reply(self.cluster.broker_up(id).await, format!("{} up", who(id)))
    }

    async fn set_partition_leader(
        &self,
        request: Request<pb::SetPartitionLeaderRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        let r = request.into_inner();
        if r.topic.is_empty() {
            return Err(ErrorCode::InvalidArgument.status("topic is empty"));
        }
        let msg = match r.broker_id {
            Some(b) => format!("{}/{} leader is broker {b}", r.topic, r.partition),
            None => format!("{}/{} is leaderless", r.topic, r.partition),
        };
        reply(
            self.cluster
                .partition_leader(&r.topic, r.partition, r.broker_id)
                .await,
            msg,
        )
    }

    async fn kafka_outage(
        &self,
        request: Request<pb::KafkaOutageRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        if request.into_inner().down {
            reply(
                self.cluster.broker_down(-1).await,
                "kafka outage: all brokers down".into(),
            )
        } else {
            reply(
                self.cluster.broker_up(-1).await,
                "kafka back: all brokers up".into(),
            )
        }
    }

    async fn set_broker_rtt(
        &self,
        request: Request<pb::SetBrokerRttRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        let r = request.into_inner();
        reply(
            self.cluster
                .broker_rtt(r.broker_id, Duration::from_millis(r.rtt_ms.into()))
                .await,
            format!("{} rtt {} ms", who(r.broker_id), r.rtt_ms),
        )
    }

    async fn inject_request_errors(
        &self,
        request: Request<pb::InjectRequestErrorsRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        let r = request.into_inner();
        if r.errors.is_empty() {
            return Err(ErrorCode::InvalidArgument.status("errors is empty"));
        }
        let api: MockApi = r
            .api
            .parse()
            .map_err(|e: ballast_kafka::Error| ErrorCode::InvalidArgument.status(e.to_string()))?;
        let errors: Vec<&str> = r.errors.iter().map(String::as_str).collect();
        reply(
            self.cluster.inject_request_errors(api, &errors).await,
            format!(
                "next {} {} requests fail: {}",
                errors.len(),
                r.api,
                errors.join(", ")
            ),
        )
    }

    async fn set_topic_error(
        &self,
        request: Request<pb::SetTopicErrorRequest>,
    ) -> Result<Response<pb::ControlReply>, Status> {
        let r = request.into_inner();
        if r.topic.is_empty() {
            return Err(ErrorCode::InvalidArgument.status("topic is empty"));
        }
        reply(
            self.cluster.set_topic_error(&r.topic, &r.error).await,
            format!("{} metadata error: {}", r.topic, r.error),
        )
    }
}
