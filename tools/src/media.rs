//! Media for the chat CLI (issue 25): the file's SHA-256, its MIME type from its extension,
//! the upload to a slot's URL (with progress) and the download of a received object, checked
//! against the SHA-256 and size its message carries. HTTPS through ureq (rustls, *ring*),
//! trusting the same certificate as the chat connection.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

/// Most time one upload or download may take.
const MEDIA_HTTP_TIMEOUT: Duration = Duration::from_secs(600);
/// The header the server names its refusal's error code in.
const ERROR_HEADER: &str = "x-switchboard-error";

/// An HTTP(S) client for the media service.
#[derive(Debug, Clone)]
pub struct MediaHttp {
    agent: ureq::Agent,
}

impl MediaHttp {
    /// A client trusting `ca` (PEM), or the web PKI when `None`.
    pub fn new(ca: Option<&Path>) -> anyhow::Result<MediaHttp> {
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let roots = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(MEDIA_HTTP_TIMEOUT))
            .build()
            .new_agent();
        Ok(MediaHttp { agent })
    }

    /// PUTs the file at `path` (`size` bytes) to a slot's `url`, calling `progress` with the
    /// bytes sent so far.
    pub fn upload(
        &self,
        url: &str,
        path: &Path,
        size: u64,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> anyhow::Result<()> {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        let body = Counting {
            inner: file,
            sent: 0,
            progress,
        };
        let mut r = self
            .agent
            .put(url)
            .header("content-length", size.to_string())
            .send(ureq::SendBody::from_owned_reader(body))
            .context("upload")?;
        match r.status().as_u16() {
            200 | 201 => Ok(()),
            status => {
                let code = header(&r, ERROR_HEADER);
                let text = r.body_mut().read_to_string().unwrap_or_default();
                bail!(
                    "upload refused: HTTP {status} (code {code}): {}",
                    text.trim()
                )
            }
        }
    }

    /// PUTs `bytes` to a slot's `url`.
    pub fn put_bytes(&self, url: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let mut r = self.agent.put(url).send(bytes).context("upload")?;
        match r.status().as_u16() {
            200 | 201 => Ok(()),
            status => {
                let code = header(&r, ERROR_HEADER);
                let text = r.body_mut().read_to_string().unwrap_or_default();
                bail!(
                    "upload refused: HTTP {status} (code {code}): {}",
                    text.trim()
                )
            }
        }
    }

    /// GETs `url` into memory: its bytes, at most `size`.
    pub fn get_bytes(&self, url: &str, size: u64) -> anyhow::Result<Vec<u8>> {
        let mut r = self.agent.get(url).call().context("download")?;
        if r.status().as_u16() != 200 {
            let code = header(&r, ERROR_HEADER);
            bail!("download refused: HTTP {} (code {code})", r.status());
        }
        Ok(r.body_mut().with_config().limit(size).read_to_vec()?)
    }

    /// Downloads `url` into `dir` as `name`, checking `size` and `sha256`; the file appears
    /// under its name only once whole and checked.
    pub fn download(
        &self,
        url: &str,
        dir: &Path,
        name: &str,
        size: u64,
        sha256: &[u8],
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<PathBuf> {
        let mut r = self.agent.get(url).call().context("download")?;
        if r.status().as_u16() != 200 {
            let code = header(&r, ERROR_HEADER);
            bail!("download refused: HTTP {} (code {code})", r.status());
        }
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.part"));
        let mut out = std::fs::File::create(&tmp)?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut body = r.body_mut().with_config().limit(size).reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n as u64;
            hash.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            progress(got);
        }
        if got != size || hash.finish().as_ref() != sha256 {
            let _ = std::fs::remove_file(&tmp);
            bail!("download of {name}: {got} bytes, not the {size} bytes and SHA-256 sent");
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

/// Files larger than this get progress lines.
pub const PROGRESS_BYTES_MIN: u64 = 1 << 20;

/// A progress callback for a transfer of `size` bytes: `{what}: N% of SIZE bytes` on stderr
/// at each tenth, for files over [`PROGRESS_BYTES_MIN`] only.
pub fn progress_lines(what: &'static str, size: u64) -> impl FnMut(u64) + Send + 'static {
    let mut shown = 0;
    move |done: u64| {
        let pct = (done * 100).checked_div(size).unwrap_or(100);
        if size > PROGRESS_BYTES_MIN && pct >= shown + 10 {
            shown = pct - pct % 10;
            eprintln!("{what}: {shown}% of {size} bytes");
        }
    }
}

fn header(r: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// A reader that reports how much was read.
struct Counting<R, F> {
    inner: R,
    sent: u64,
    progress: F,
}

impl<R: Read, F: FnMut(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}

/// The SHA-256 and size of the file at `path`, read once.
pub fn sha256_file(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(hash.finish().as_ref());
    Ok((sha, size))
}

/// Extensions and their MIME types.
const MIME_TYPES: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
    ("ogg", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("m4a", "audio/mp4"),
    ("mp3", "audio/mpeg"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
];

/// The MIME type for `path`'s extension (`application/octet-stream` when unknown).
pub fn mime_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    MIME_TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or("application/octet-stream", |(_, m)| m)
}

/// A file name for a received object: the start of its SHA-256 and an extension for its
/// MIME type (never a name the sender chose, so nothing lands outside the save folder).
pub fn file_name_for(sha256: &[u8], mime: &str) -> String {
    let hex: String = sha256.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let ext = MIME_TYPES
        .iter()
        .find(|(_, m)| *m == mime)
        .map_or("bin", |(e, _)| e);
    format!("{hex}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(mime_for(Path::new("a/b.JPG")), "image/jpeg");
        assert_eq!(mime_for(Path::new("noext")), "application/octet-stream");
        assert_eq!(
            file_name_for(&[0xab; 32], "image/png"),
            "abababababababab.png"
        );
        assert_eq!(
            file_name_for(&[1; 32], "x/../../etc"),
            "0101010101010101.bin"
        );
    }
}
