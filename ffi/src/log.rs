//! Logging set up from the environment, once per process: `IDM_LOG` (a file path
//! or `syslog`) and `IDM_LOG_LEVEL` (a `tracing` filter, default `info`). With
//! `IDM_LOG` unset the library does not install a subscriber (a host program that
//! uses `tracing` itself keeps its own). Never stdout.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

static INIT: Once = Once::new();

/// Installs the subscriber `IDM_LOG` asks for (first call only).
pub(crate) fn init() {
    INIT.call_once(|| {
        let Ok(target) = std::env::var("IDM_LOG") else {
            return;
        };
        let level = std::env::var("IDM_LOG_LEVEL").unwrap_or_else(|_| "info".to_string());
        let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
        if target == "syslog" {
            let writer = SyslogWriter::new();
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .without_time()
                .with_writer(writer)
                .try_init();
            return;
        }
        match OpenOptions::new().create(true).append(true).open(&target) {
            Ok(file) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .with_writer(Mutex::new(file))
                    .try_init();
            }
            Err(e) => {
                // The only place the library writes to stderr: it cannot log.
                eprintln!("libseagate_ilm: cannot open IDM_LOG={target}: {e}");
            }
        }
    });
}

/// Sends each event as one RFC 3164 datagram to `/dev/log` (facility daemon).
#[derive(Clone)]
struct SyslogWriter {
    sock: Option<Arc<UnixDatagram>>,
    ident: Arc<str>,
}

impl SyslogWriter {
    fn new() -> SyslogWriter {
        let sock = UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .ok()
            .map(Arc::new);
        SyslogWriter {
            sock,
            ident: Arc::from(format!("libseagate_ilm[{}]", std::process::id())),
        }
    }
}

/// One event's bytes, sent when the formatter is done with it.
struct SyslogLine {
    sock: Option<Arc<UnixDatagram>>,
    ident: Arc<str>,
    level: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let Some(sock) = &self.sock else { return };
        let text = String::from_utf8_lossy(&self.buf);
        // Facility daemon (3) * 8 + severity.
        let msg = format!(
            "<{}>{}: {}",
            3 * 8 + self.level,
            self.ident,
            text.trim_end()
        );
        let _ = sock.send(msg.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        self.line(6)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let level = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        self.line(level)
    }
}

impl SyslogWriter {
    fn line(&self, level: u8) -> SyslogLine {
        SyslogLine {
            sock: self.sock.clone(),
            ident: self.ident.clone(),
            level,
            buf: Vec::with_capacity(256),
        }
    }
}
