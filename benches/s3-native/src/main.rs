//! Upload N MiB of generated data to S3 with native opendal, written in
//! 1 MiB pieces through an 8 MiB-part writer (as the plugin does), and print
//! the seconds it took.
//!
//! `s3-native ENDPOINT BUCKET KEY MIB` (credentials `test`/`test`, path style).

use std::time::Instant;

use opendal::Operator;
use opendal::services::S3;

#[tokio::main]
async fn main() -> opendal::Result<()> {
    opendal::install_default();
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, bucket, key, mib) = (&args[1], &args[2], &args[3], args[4].parse::<usize>().unwrap());
    let op = Operator::new(
        S3::default()
            .endpoint(endpoint)
            .bucket(bucket)
            .region("us-east-1")
            .access_key_id("test")
            .secret_access_key("test")
            .disable_config_load()
            .disable_ec2_metadata(),
    )?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    let mut w = op.writer_with(key).chunk(8 << 20).await?;
    for _ in 0..mib {
        let mut piece = Vec::with_capacity(1 << 20);
        for _ in 0..(1 << 20) / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            piece.extend_from_slice(&x.to_le_bytes());
        }
        w.write(piece).await?;
    }
    w.close().await?;
    println!("{:.3}", start.elapsed().as_secs_f64());
    Ok(())
}
