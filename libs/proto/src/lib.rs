//! Generated protobuf messages and tonic clients and servers for every Ballast API.
//!
//! The `.proto` sources live in the workspace's `proto/` folder and are compiled by
//! `build.rs` with protox. This crate holds generated code only: no logic.

#![allow(clippy::all, missing_docs)]

/// Types shared by every API.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("ballast.common.v1");
    }
}

/// The ingest gateway's API.
pub mod ingest {
    pub mod v1 {
        tonic::include_proto!("ballast.ingest.v1");
    }
}

/// The dedup service's API.
pub mod dedup {
    pub mod v1 {
        tonic::include_proto!("ballast.dedup.v1");
    }
}

/// The failover envelope.
pub mod failover {
    pub mod v1 {
        tonic::include_proto!("ballast.failover.v1");
    }
}

/// The retry workers' admin API.
pub mod retry {
    pub mod v1 {
        tonic::include_proto!("ballast.retry.v1");
    }
}

/// The topology service's API.
pub mod topology {
    pub mod v1 {
        tonic::include_proto!("ballast.topology.v1");
    }
}

/// Control of the embedded dev stack.
pub mod dev {
    pub mod v1 {
        tonic::include_proto!("ballast.dev.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Ballast proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ballast_descriptor.bin"));
