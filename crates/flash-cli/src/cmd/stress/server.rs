//! A dedicated cache server for the kill-and-restart fault: same kind as the
//! configured cache, on a spare loopback port, owned by this process.

use super::BoxError;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Dedicated {
    kind: Kind,
    port: u16,
    child: Option<Child>,
}

#[derive(Clone, Copy)]
enum Kind {
    Redis,
    Memcached,
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Dedicated {
    pub async fn start(cache_url: &str) -> Result<Dedicated, BoxError> {
        let kind = if cache_url.starts_with("memcache") {
            Kind::Memcached
        } else if cache_url.starts_with("redis") {
            Kind::Redis
        } else {
            return Err(
                "--kill-cache needs FLASH_CACHE_URL of a server (redis:// or memcache://)".into(),
            );
        };
        let mut s = Dedicated {
            kind,
            port: free_port()?,
            child: None,
        };
        s.restart().await?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}/0", self.port),
            Kind::Memcached => format!("memcache://127.0.0.1:{}", self.port),
        }
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]);
                c
            }
            Kind::Memcached => {
                let mut c = Command::new("memcached");
                c.args(["-p", &port, "-U", "0", "-l", "127.0.0.1", "-u", "root"]);
                c
            }
        };
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        self.child = Some(cmd.spawn()?);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("dedicated cache server on port {port} did not start").into())
    }

    /// SIGKILL.
    pub async fn kill(&mut self) -> Result<(), BoxError> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }
}
