//! kagi's gRPC contract, generated from `proto/kagi/v1/*.proto`.

/// Package `kagi.v1`: the messages and services every kagi component speaks.
pub mod v1 {
    #![allow(clippy::all, missing_debug_implementations)]
    tonic::include_proto!("kagi.v1");
}

/// The encoded `FileDescriptorSet` of every kagi proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kagi_descriptor.bin"));
