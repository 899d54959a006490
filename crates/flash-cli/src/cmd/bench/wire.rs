//! A hand-written, single-connection client that sends one GET and reads the
//! reply straight off the socket: the floor under any client library (no
//! multiplexing task, no pool). Only for the "wire floor" column.

use super::stats::BenchResult;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP: `GET key` → `$len\r\n<bytes>\r\n` or `$-1\r\n`.
    Redis,
    /// memcached meta: `mg key v` → `VA len\r\n<bytes>\r\n` or `EN\r\n`.
    Memcache,
}

pub struct WireClient {
    conn: BufReader<TcpStream>,
    proto: Protocol,
    request: Vec<u8>,
    line: String,
    value: Vec<u8>,
}

impl WireClient {
    pub async fn connect(addr: &str, proto: Protocol) -> BenchResult<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(WireClient {
            conn: BufReader::new(stream),
            proto,
            request: Vec::with_capacity(512),
            line: String::new(),
            value: Vec::new(),
        })
    }

    /// The value of `key` (its length; the bytes stay in the client's buffer).
    pub async fn get(&mut self, key: &str) -> BenchResult<Option<usize>> {
        self.request.clear();
        match self.proto {
            Protocol::Redis => {
                self.request.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$");
                self.request
                    .extend_from_slice(key.len().to_string().as_bytes());
                self.request.extend_from_slice(b"\r\n");
                self.request.extend_from_slice(key.as_bytes());
                self.request.extend_from_slice(b"\r\n");
            }
            Protocol::Memcache => {
                self.request.extend_from_slice(b"mg ");
                self.request.extend_from_slice(key.as_bytes());
                self.request.extend_from_slice(b" v\r\n");
            }
        }
        self.conn.get_mut().write_all(&self.request).await?;
        self.line.clear();
        self.conn.read_line(&mut self.line).await?;
        let head = self.line.trim_end();
        let len = match self.proto {
            Protocol::Redis if head == "$-1" => return Ok(None),
            Protocol::Redis => head.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
            Protocol::Memcache if head == "EN" => return Ok(None),
            Protocol::Memcache => head
                .strip_prefix("VA ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok()),
        }
        .ok_or_else(|| format!("unexpected reply {head:?}"))?;
        // The value and its trailing CRLF.
        self.value.resize(len + 2, 0);
        self.conn.read_exact(&mut self.value).await?;
        Ok(Some(len))
    }
}
