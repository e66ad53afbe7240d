//! Upload N MiB of generated data through a storage plugin and print the
//! seconds it took (for `benches/s3.sh`, side by side with native opendal).
//!
//! `upload PLUGIN.wasm MIB KEY [k=v ...]`; allowed endpoint and network from
//! `ALLOW_ENDPOINT` and `ALLOW_NETWORK`.

use std::sync::Arc;
use std::time::Instant;

use etcd_operator::plugins::{EgressPolicy, Grants, Limits, LoadedPlugin, PluginEngine, registry};

/// Pseudo-random bytes (xorshift), produced as they are read.
struct Generated {
    left: u64,
    x: u64,
}

impl tokio::io::AsyncRead for Generated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize / 8 * 8;
        for _ in 0..n / 8 {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            let x = self.x;
            buf.put_slice(&x.to_le_bytes());
        }
        self.left -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (file, mib, key) = (&args[1], args[2].parse::<u64>()?, &args[3]);
    let config: Vec<(String, String)> = args[4..]
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let engine = PluginEngine::new(
        Limits::default(),
        etcd_operator::plugins::cache::default_dir(),
    )?;
    let bytes = std::fs::read(file)?;
    let LoadedPlugin::Storage(plugin) = registry::load(&engine, "bench", &bytes)? else {
        anyhow::bail!("{file} is not a storage plugin");
    };
    let env = |k: &str| std::env::var(k).ok().into_iter().collect::<Vec<_>>();
    let grants = Grants {
        egress: Arc::new(EgressPolicy::from_entries(
            &env("ALLOW_ENDPOINT"),
            &env("ALLOW_NETWORK"),
        )?),
        dir: None,
    };
    let mut session = plugin.open(&config, &grants).await?;
    let start = Instant::now();
    let t = session
        .upload_from(
            key,
            Generated {
                left: mib << 20,
                x: 0x9e37_79b9_7f4a_7c15,
            },
        )
        .await?;
    println!("{:.3}", start.elapsed().as_secs_f64());
    assert_eq!(t.size, mib << 20);
    Ok(())
}
