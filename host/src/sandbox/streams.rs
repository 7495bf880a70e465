//! The guest exit of the TLS-stream capability
//! (`kmshost:plugin/tls-stream`): glue between the guest's types and
//! [`crate::capability::stream`], which decides everything. Each open
//! stream holds one of the instance's in-flight slots (shared with
//! `wasi:http` requests) until it is released or dropped.

use super::bindings::kmshost::plugin::tls_stream::{self, Timeouts};
use super::bindings::kmshost::plugin::types::KmsError as WitError;
use super::outbound::InFlight;
use super::state::HostState;
use crate::capability::stream::{StreamError, StreamTimeouts, TlsConn};
use wasmtime::component::Resource;

/// A stream as the instance's resource table holds it.
#[derive(Debug)]
pub struct StreamHandle {
    conn: TlsConn,
    _slot: InFlight,
}

impl HostState {
    fn stream_error(&mut self, e: StreamError) -> WitError {
        match e {
            StreamError::Denied(m) => WitError::Denied(m),
            StreamError::Unavailable(m) => WitError::Unavailable(m),
            StreamError::TimedOut(m) => {
                self.timed_out = true;
                WitError::Unavailable(m)
            }
            StreamError::Limit(m) => WitError::Other(m),
        }
    }

    fn stream_timeouts(&self, t: &Timeouts) -> StreamTimeouts {
        let p = self.hooks.policy();
        StreamTimeouts::within(
            t.connect_ms,
            t.read_ms,
            t.write_ms,
            p.connect.connect_timeout,
            p.connect.first_byte_timeout,
        )
    }
}

impl tls_stream::Host for HostState {
    async fn open(
        &mut self,
        endpoint: String,
        timeouts: Timeouts,
    ) -> wasmtime::Result<Result<Resource<StreamHandle>, WitError>> {
        let Some(slot) = self.hooks.enter() else {
            let m = format!(
                "stream to {} refused: the instance already holds {} connections and requests (release or drop one first)",
                crate::plugin_text::sanitize_to(&endpoint, 256),
                super::outbound::MAX_IN_FLIGHT
            );
            self.hooks.events().push(m.clone());
            return Ok(Err(WitError::Other(m)));
        };
        let t = self.stream_timeouts(&timeouts);
        let policy = self.hooks.policy().clone();
        let events = self.hooks.events().clone();
        let conn = match policy.open_stream(&endpoint, t, &events).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(self.stream_error(e))),
        };
        let handle = StreamHandle { conn, _slot: slot };
        Ok(Ok(self.table().push(handle)?))
    }

    async fn release(&mut self, conn: Resource<StreamHandle>) -> wasmtime::Result<()> {
        let handle = self.table().delete(conn)?;
        self.hooks.policy().release_stream(handle.conn);
        Ok(())
    }
}

impl tls_stream::HostConnection for HostState {
    async fn send(
        &mut self,
        conn: Resource<StreamHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let policy = self.hooks.policy().clone();
        let events = self.hooks.events().clone();
        let mut bytes = self.stream_bytes;
        let handle = self.table().get_mut(&conn)?;
        let r = handle
            .conn
            .send(&data, &mut bytes, policy.max_response_bytes, &events)
            .await;
        self.stream_bytes = bytes;
        Ok(r.map_err(|e| self.stream_error(e)))
    }

    async fn receive_exact(
        &mut self,
        conn: Resource<StreamHandle>,
        len: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let policy = self.hooks.policy().clone();
        let events = self.hooks.events().clone();
        let mut bytes = self.stream_bytes;
        let handle = self.table().get_mut(&conn)?;
        let r = handle
            .conn
            .receive_exact(len, &mut bytes, policy.max_response_bytes, &events)
            .await;
        self.stream_bytes = bytes;
        Ok(r.map_err(|e| self.stream_error(e)))
    }

    async fn reused(&mut self, conn: Resource<StreamHandle>) -> wasmtime::Result<bool> {
        Ok(self.table().get(&conn)?.conn.reused())
    }

    async fn drop(&mut self, conn: Resource<StreamHandle>) -> wasmtime::Result<()> {
        self.table().delete(conn)?;
        Ok(())
    }
}
