//! Consumer-group offsets (FindCoordinator v1, OffsetCommit v2, OffsetFetch v1) over a plain
//! connection: the Kafka client crate (rskafka) does not speak them, and Spindle only needs
//! the "simple consumer" form (generation -1, no member id), which brokers accept for a group
//! nobody has joined. Checked against tansu 0.6 by the connector tests.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIND_COORDINATOR: i16 = 10;
const OFFSET_COMMIT: i16 = 8;
const OFFSET_FETCH: i16 = 9;
const API_VERSIONS: i16 = 18;
const CLIENT_ID: &str = "spindle";

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("talking to {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("malformed {what} response from {addr}")]
    Malformed { what: &'static str, addr: String },
    #[error("{what}: the broker answered error code {code}")]
    Broker { what: &'static str, code: i16 },
}

impl GroupError {
    /// The group's coordinator is loading, not there yet or moved (`COORDINATOR_LOAD_IN_PROGRESS`
    /// 14, `COORDINATOR_NOT_AVAILABLE` 15, `NOT_COORDINATOR` 16): worth a fresh look-up soon.
    /// A new group meets 15 and then 16 while Kafka creates and loads `__consumer_offsets`.
    pub fn coordinator_moving(&self) -> bool {
        matches!(self, GroupError::Broker { code: 14..=16, .. })
    }
}

/// One connection to a broker, with one request in flight at a time.
pub struct Conn {
    stream: TcpStream,
    addr: String,
    correlation: i32,
    timeout: Duration,
}

impl Conn {
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, GroupError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| GroupError::Timeout {
                addr: addr.to_string(),
                timeout,
            })?
            .map_err(|source| GroupError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            addr: addr.to_string(),
            correlation: 0,
            timeout,
        })
    }

    /// Sends one request (header v1) and returns the response body after its header (v0).
    async fn call(&mut self, api_key: i16, version: i16, body: &[u8]) -> Result<Bytes, GroupError> {
        self.correlation += 1;
        let mut frame = BytesMut::with_capacity(body.len() + 32);
        frame.put_i32(0);
        frame.put_i16(api_key);
        frame.put_i16(version);
        frame.put_i32(self.correlation);
        put_str(&mut frame, CLIENT_ID);
        frame.put_slice(body);
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let io = |source| GroupError::Io {
            addr: self.addr.clone(),
            source,
        };
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let n = self.stream.read_i32().await?;
            let mut buf = vec![0; n.max(0) as usize];
            self.stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| GroupError::Timeout {
                addr: self.addr.clone(),
                timeout: self.timeout,
            })?
            .map_err(io)?;
        let mut b = Bytes::from(buf);
        if b.remaining() < 4 || b.get_i32() != self.correlation {
            return Err(GroupError::Malformed {
                what: "response header",
                addr: self.addr.clone(),
            });
        }
        Ok(b)
    }

    /// ApiVersions v0: (api key, min, max) the broker supports.
    pub async fn api_versions(&mut self) -> Result<Vec<(i16, i16, i16)>, GroupError> {
        let mut b = self.call(API_VERSIONS, 0, &[]).await?;
        let bad = || GroupError::Malformed {
            what: "ApiVersions",
            addr: String::new(),
        };
        let code = get_i16(&mut b).ok_or_else(bad)?;
        if code != 0 {
            return Err(GroupError::Broker {
                what: "ApiVersions",
                code,
            });
        }
        let n = get_i32(&mut b).ok_or_else(bad)?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push((
                get_i16(&mut b).ok_or_else(bad)?,
                get_i16(&mut b).ok_or_else(bad)?,
                get_i16(&mut b).ok_or_else(bad)?,
            ));
        }
        Ok(out)
    }

    /// FindCoordinator v1 for a group: the coordinator's `host:port`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<String, GroupError> {
        let mut body = BytesMut::new();
        put_str(&mut body, group);
        body.put_i8(0);
        let mut b = self.call(FIND_COORDINATOR, 1, &body).await?;
        let addr = self.addr.clone();
        let bad = move || GroupError::Malformed {
            what: "FindCoordinator",
            addr: addr.clone(),
        };
        let _throttle = get_i32(&mut b).ok_or_else(bad.clone())?;
        let code = get_i16(&mut b).ok_or_else(bad.clone())?;
        let _message = get_nullable_str(&mut b).ok_or_else(bad.clone())?;
        let _node = get_i32(&mut b).ok_or_else(bad.clone())?;
        let host = get_nullable_str(&mut b).ok_or_else(bad.clone())?.unwrap_or_default();
        let port = get_i32(&mut b).ok_or_else(bad)?;
        if code != 0 {
            return Err(GroupError::Broker {
                what: "FindCoordinator",
                code,
            });
        }
        Ok(format!("{host}:{port}"))
    }

    /// OffsetCommit v2 as a simple consumer (generation -1, no member id).
    pub async fn commit(&mut self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), GroupError> {
        let mut body = BytesMut::new();
        put_str(&mut body, group);
        body.put_i32(-1);
        put_str(&mut body, "");
        body.put_i64(-1);
        body.put_i32(1);
        put_str(&mut body, topic);
        body.put_i32(offsets.len() as i32);
        for &(p, o) in offsets {
            body.put_i32(p);
            body.put_i64(o);
            body.put_i16(-1);
        }
        let mut b = self.call(OFFSET_COMMIT, 2, &body).await?;
        let addr = self.addr.clone();
        let bad = move || GroupError::Malformed {
            what: "OffsetCommit",
            addr: addr.clone(),
        };
        let topics = get_i32(&mut b).ok_or_else(bad.clone())?;
        for _ in 0..topics {
            get_nullable_str(&mut b).ok_or_else(bad.clone())?;
            let parts = get_i32(&mut b).ok_or_else(bad.clone())?;
            for _ in 0..parts {
                let _p = get_i32(&mut b).ok_or_else(bad.clone())?;
                let code = get_i16(&mut b).ok_or_else(bad.clone())?;
                if code != 0 {
                    return Err(GroupError::Broker {
                        what: "OffsetCommit",
                        code,
                    });
                }
            }
        }
        Ok(())
    }

    /// OffsetFetch v1: the group's committed offset per partition (-1: none).
    pub async fn fetch(&mut self, group: &str, topic: &str, partitions: &[i32]) -> Result<Vec<(i32, i64)>, GroupError> {
        let mut body = BytesMut::new();
        put_str(&mut body, group);
        body.put_i32(1);
        put_str(&mut body, topic);
        body.put_i32(partitions.len() as i32);
        for &p in partitions {
            body.put_i32(p);
        }
        let mut b = self.call(OFFSET_FETCH, 1, &body).await?;
        let addr = self.addr.clone();
        let bad = move || GroupError::Malformed {
            what: "OffsetFetch",
            addr: addr.clone(),
        };
        let mut out = Vec::new();
        let topics = get_i32(&mut b).ok_or_else(bad.clone())?;
        for _ in 0..topics {
            get_nullable_str(&mut b).ok_or_else(bad.clone())?;
            let parts = get_i32(&mut b).ok_or_else(bad.clone())?;
            for _ in 0..parts {
                let p = get_i32(&mut b).ok_or_else(bad.clone())?;
                let offset = get_i64(&mut b).ok_or_else(bad.clone())?;
                get_nullable_str(&mut b).ok_or_else(bad.clone())?;
                let code = get_i16(&mut b).ok_or_else(bad.clone())?;
                if code != 0 {
                    return Err(GroupError::Broker {
                        what: "OffsetFetch",
                        code,
                    });
                }
                out.push((p, offset));
            }
        }
        Ok(out)
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_i16(b: &mut Bytes) -> Option<i16> {
    (b.remaining() >= 2).then(|| b.get_i16())
}
fn get_i32(b: &mut Bytes) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}
fn get_i64(b: &mut Bytes) -> Option<i64> {
    (b.remaining() >= 8).then(|| b.get_i64())
}

/// A nullable string: `Some(None)` for null, `None` when the buffer is too short.
fn get_nullable_str(b: &mut Bytes) -> Option<Option<String>> {
    let n = get_i16(b)?;
    if n < 0 {
        return Some(None);
    }
    let n = n as usize;
    if b.remaining() < n {
        return None;
    }
    let s = b.split_to(n);
    Some(Some(String::from_utf8_lossy(&s).into_owned()))
}

/// A connection to the coordinator of `group`, found through the first broker that answers.
pub async fn coordinator(brokers: &[String], group: &str, timeout: Duration) -> Result<Conn, GroupError> {
    let mut last = None;
    for b in brokers {
        let found = async {
            let mut conn = Conn::connect(b, timeout).await?;
            let addr = conn.find_coordinator(group).await?;
            if addr == conn.addr {
                Ok(conn)
            } else {
                Conn::connect(&addr, timeout).await
            }
        };
        match found.await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(GroupError::Malformed {
        what: "broker list",
        addr: String::new(),
    }))
}
