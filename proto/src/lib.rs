//! The gRPC contracts between Centrex components, generated from `proto/`.

/// `centrex.media.v1`: signalling → media node (relay sessions, drain, stats).
pub mod media {
    tonic::include_proto!("centrex.media.v1");
}

/// `centrex.signalling.v1`: signalling → signalling (requests handed to a dialog's owner).
pub mod signalling {
    tonic::include_proto!("centrex.signalling.v1");
}
