//! The RTP media relay (issue #3): data plane, gRPC MediaControl server, registration in the
//! coordination store.
