//! The CLI's side of the API: a client on the daemon's API socket.

use std::path::{Path, PathBuf};

use airlock_common::api::v1::airlock_client::AirlockClient;
use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Client = AirlockClient<Channel>;

/// Connects to the API on a Unix socket. The URI is a placeholder: every
/// connection goes to `socket`.
pub async fn connect_unix(socket: &Path) -> Result<Client> {
    let path: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://airlock.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| {
            format!(
                "the Airlock API is not answering on {} (is the daemon running? the API is for root and the `airlock` group)",
                socket.display()
            )
        })?;
    Ok(AirlockClient::new(channel))
}

/// A status from the daemon as an error with its message.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}
