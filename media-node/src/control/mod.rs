//! The MediaControl gRPC service: validates requests, calls the [`Node`], and maps its errors
//! to status codes (RESOURCE_EXHAUSTED, NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT).

mod convert;

pub use convert::InvalidArgument;

use std::sync::Arc;

use centrex_proto::media as pb;
use centrex_proto::media::media_control_server::MediaControl;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::node::Node;

/// MediaControl over one node.
pub struct MediaControlService {
    node: Arc<Node>,
    /// Becomes true when the node stops, ending the stats streams so the server can close.
    stopping: watch::Receiver<bool>,
}

impl MediaControlService {
    /// Serves `node` until `stopping` turns true.
    pub fn new(node: Arc<Node>, stopping: watch::Receiver<bool>) -> Self {
        Self { node, stopping }
    }

    fn ipv4(&self) -> bool {
        self.node.config().bind.is_ipv4()
    }
}

#[tonic::async_trait]
impl MediaControl for MediaControlService {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let request = convert::session_request(request.into_inner(), self.ipv4())?;
        let view = self.node.create(request).await?;
        Ok(Response::new(convert::session(&view)))
    }

    async fn update_leg(
        &self,
        request: Request<pb::UpdateLegRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let update = convert::leg_update(request.into_inner(), self.ipv4())?;
        let view = self.node.update(update).await?;
        Ok(Response::new(convert::session(&view)))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let id = convert::session_id(&request.into_inner().session_id, "session_id")?;
        let response = match self.node.delete(&id).await? {
            None => pb::DeleteSessionResponse::default(),
            Some([a, b]) => pb::DeleteSessionResponse {
                deleted: true,
                a: Some(convert::leg_counters(&a)),
                b: Some(convert::leg_counters(&b)),
            },
        };
        Ok(Response::new(response))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let id = convert::session_id(&request.into_inner().session_id, "session_id")?;
        let view = self.node.get(&id).await?;
        Ok(Response::new(convert::session(&view)))
    }

    async fn drain(
        &self,
        _request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let (remaining, deadline) = self.node.drain();
        Ok(Response::new(pb::DrainResponse {
            sessions_remaining: remaining as u32,
            deadline_unix_ms: crate::drain::unix_ms(deadline),
        }))
    }

    async fn get_node_stats(
        &self,
        _request: Request<pb::NodeStatsRequest>,
    ) -> Result<Response<pb::NodeStats>, Status> {
        let stats = self.node.stats();
        Ok(Response::new(convert::node_stats(
            &self.node.config().node_id,
            &stats,
        )))
    }

    type WatchNodeStatsStream = BoxStream<'static, Result<pb::NodeStats, Status>>;

    async fn watch_node_stats(
        &self,
        request: Request<pb::WatchNodeStatsRequest>,
    ) -> Result<Response<Self::WatchNodeStatsStream>, Status> {
        let period = convert::stats_interval(request.into_inner().interval_ms)?;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = (self.node.clone(), self.stopping.clone(), ticks);
        let figures = stream::unfold(state, |(node, mut stopping, mut ticks)| async move {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|&s| s) => return None,
            }
            if *stopping.borrow() {
                return None;
            }
            let stats = convert::node_stats(&node.config().node_id, &node.stats());
            Some((Ok(stats), (node, stopping, ticks)))
        });
        Ok(Response::new(figures.boxed()))
    }
}
