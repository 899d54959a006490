//! The partition fault: a TCP proxy in front of each cache server that one
//! worker process talks through, and that can be paused. While paused it
//! accepts connections but forwards no byte in either direction, so that
//! process's cache requests hang until they time out (a cut cable, a hung
//! connection), while every other process reaches the cache directly.

use super::BoxError;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Proxies for every server of one cache URL.
pub struct Partition {
    url: String,
    direct: String,
    cut: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Partition {
    /// Starts one proxy per server of `cache_url` (`redis://` or
    /// `memcache://`; a cluster client would learn the nodes' own addresses
    /// from the cluster and bypass a proxy).
    pub async fn start(cache_url: &str) -> Result<Partition, BoxError> {
        let (scheme, rest) = cache_url
            .split_once("://")
            .ok_or("cache URL without a scheme")?;
        if scheme != "redis" && scheme != "memcache" {
            return Err("--partition needs FLASH_CACHE_URL of redis:// or memcache://".into());
        }
        // `host:port[,host:port...][/path][?query]`
        let (mut hosts, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if scheme == "memcache" {
            // The ring places keys by server address: through a proxy, the
            // cut-off process would place them apart from the others. With
            // one server every key is on it, whatever its name.
            hosts = hosts.split(',').next().unwrap_or(hosts);
        }
        let (cut, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut proxied = Vec::new();
        for host in hosts.split(',') {
            let upstream: SocketAddr = tokio::net::lookup_host(host)
                .await?
                .next()
                .ok_or_else(|| format!("cannot resolve {host}"))?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            proxied.push(listener.local_addr()?.to_string());
            tasks.push(tokio::spawn(accept(listener, upstream, cut.subscribe())));
        }
        Ok(Partition {
            url: format!("{scheme}://{}{tail}", proxied.join(",")),
            direct: format!("{scheme}://{hosts}{tail}"),
            cut,
            tasks,
        })
    }

    /// The URL that reaches the cache through the proxies.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL the other processes use (memcached: the first server only).
    pub fn direct_url(&self) -> &str {
        &self.direct
    }

    /// Stops (true) or resumes (false) forwarding on every connection.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    while let Ok((client, _)) = listener.accept().await {
        let cut = cut.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Either direction ending closes both.
            tokio::select! {
                _ = pipe(cr, sw, cut.clone()) => {}
                _ = pipe(sr, cw, cut) => {}
            }
        });
    }
}

/// Copies `from` to `to`, holding every chunk while the cut is on.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // Bytes read while cut (or arriving just before) wait here: the
        // request is neither delivered nor answered until the cut ends.
        if cut.wait_for(|c| !*c).await.is_err() {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}
