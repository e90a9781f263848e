//! Generated protobuf messages and gRPC clients and servers for every rtim
//! service, one module per proto package, plus the descriptor set that the
//! reflection service serves.

pub mod json;

/// Encoded `FileDescriptorSet` of every rtim proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rtim_descriptor.bin"));

pub mod events {
    pub mod v1 {
        tonic::include_proto!("rtim.events.v1");
    }
}

pub mod bus {
    pub mod v1 {
        tonic::include_proto!("rtim.bus.v1");
    }
}

pub mod ingestion {
    pub mod v1 {
        tonic::include_proto!("rtim.ingestion.v1");
    }
}

pub mod profile {
    pub mod v1 {
        tonic::include_proto!("rtim.profile.v1");
    }
}

pub mod decisioning {
    pub mod v1 {
        tonic::include_proto!("rtim.decisioning.v1");
    }
}

pub mod recommendations {
    pub mod v1 {
        tonic::include_proto!("rtim.recommendations.v1");
    }
}

pub mod surveys {
    pub mod v1 {
        tonic::include_proto!("rtim.surveys.v1");
    }
}

pub mod gamification {
    pub mod v1 {
        tonic::include_proto!("rtim.gamification.v1");
    }
}

pub mod bench {
    pub mod v1 {
        tonic::include_proto!("rtim.bench.v1");
    }
}
