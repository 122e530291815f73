//! The `contacts.v1` contract between the edge, contacts-svc and internal callers: the
//! generated message types, the tonic client and server, and the encoded descriptor set
//! that server reflection serves so `grpcurl` works without proto files.

/// Package `contacts.v1`.
pub mod contacts {
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("contacts.v1");
    }
}

/// Package `edge.v1`: the edge's internal API.
pub mod edge {
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("edge.v1");
    }
}

pub use contacts::v1;
pub use prost;
pub use prost_types;

/// Encoded `FileDescriptorSet` of `contacts.v1`, `edge.v1` and the files they import.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/contacts_v1_descriptor.bin"));

/// Fully qualified name of the service, as health checks and reflection report it.
pub const SERVICE_NAME: &str = "contacts.v1.ContactsService";

/// Fully qualified name of the edge's internal service.
pub const REPLAY_SERVICE_NAME: &str = "edge.v1.ReplayService";

/// Source names that contacts-svc uses for events of its own (`api:<idempotency key>`
/// for UpsertContact): no configured source may take them, or its event ids could
/// collide with those.
pub const RESERVED_SOURCES: &[&str] = &["api"];
