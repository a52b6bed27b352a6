//! The DogStatsD listeners: a Unix datagram socket (with origin detection), UDP, and a Unix
//! stream socket (4-byte little-endian length-prefixed frames).
//!
//! Each socket has its own thread that blocks in `recvmsg`, then drains whatever else is
//! already queued without blocking, and hands the datagrams on as one [`Batch`]: one buffer, one
//! channel send and one wake-up of the aggregator for up to [`BATCH_PACKETS`] datagrams. Under
//! load batches fill up; when idle each datagram goes on at once. Blocking threads, rather than
//! tokio tasks, keep the hot receive path free of executor overhead and give the kernel a
//! reader that is always waiting.
//!
//! Sockets:
//! - Unix datagram (`dogstatsd_socket`): the parent directory is created, a stale socket file is
//!   replaced (anything else at the path is an error), the socket is made writable by everyone
//!   (mode 0722, as the Datadog Agent does, so containers running as any user can send), and
//!   with origin detection `SO_PASSCRED` makes the kernel attach each sender's pid.
//! - UDP (`dogstatsd_port`): loopback unless `dogstatsd_non_local_traffic`; no origin.
//! - Unix stream (`dogstatsd_stream_socket`): origin from the peer's credentials at connect
//!   time (`SO_PEERCRED`); a frame longer than `dogstatsd_buffer_size` drops the connection.
//!
//! Every socket gets a large receive buffer (`dogstatsd_so_rcvbuf`), forced past the kernel's
//! default cap when the runner may do so, so bursts queue in the kernel rather than being
//! dropped.
//!
//! Missing: `recvmmsg` (one syscall for many datagrams) and buffer recycling between batches.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::origin::{Origin, OriginResolver};
use crate::aggregator::telemetry::{Counter, InternalMetric, Telemetry};

/// Datagrams handed on together, at most.
pub const BATCH_PACKETS: usize = 64;
/// Bytes handed on together, about: batches are allocated to fit what they hold, so a queue of
/// batches behind a busy aggregator costs what was received, not a fixed buffer each.
const BATCH_BYTES: usize = 64 << 10;
/// How often a blocked receive wakes up to see whether the listener was stopped.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// How the datagrams came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    UnixDatagram,
    UnixStream,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::UnixDatagram => "uds",
            Self::UnixStream => "uds_stream",
        }
    }
}

/// One datagram of a batch.
#[derive(Debug, Clone)]
pub struct Packet {
    range: Range<usize>,
    pub origin: Origin,
}

/// Datagrams received together, from one socket, in one buffer.
#[derive(Debug)]
pub struct Batch {
    pub transport: Transport,
    data: Vec<u8>,
    packets: Vec<Packet>,
}

impl Batch {
    fn new(transport: Transport) -> Self {
        Self {
            transport,
            data: Vec::new(),
            packets: Vec::new(),
        }
    }

    /// Each datagram's bytes and origin.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], &Origin)> {
        self.packets
            .iter()
            .map(|p| (&self.data[p.range.clone()], &p.origin))
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Bytes received, in all.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn push(&mut self, bytes: &[u8], origin: Origin) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.packets.push(Packet {
            range: start..self.data.len(),
            origin,
        });
    }

    fn full(&self, buffer_size: usize) -> bool {
        self.packets.len() >= BATCH_PACKETS || self.data.len() + buffer_size > BATCH_BYTES
    }
}

/// Where batches go; `false` means the receiver is gone and the listener should stop.
pub type Sink = Arc<dyn Fn(Batch) -> bool + Send + Sync>;

/// The listeners' settings (the runner's `dogstatsd_*` keys).
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub socket: Option<PathBuf>,
    pub stream_socket: Option<PathBuf>,
    pub udp: Option<SocketAddr>,
    pub origin_detection: bool,
    pub buffer_size: usize,
    pub so_rcvbuf: usize,
    pub procfs: PathBuf,
}

/// The listeners' counters, in the runner's own telemetry (`kennel.dogstatsd.*`).
#[derive(Debug, Clone)]
pub struct ListenerStats {
    datagrams: [Counter; 3],
    bytes: [Counter; 3],
    read_errors: [Counter; 3],
    origin_errors: Counter,
}

impl ListenerStats {
    pub fn new(telemetry: &Telemetry) -> Self {
        let per_transport = |metric| {
            [
                Transport::Udp,
                Transport::UnixDatagram,
                Transport::UnixStream,
            ]
            .map(|t| telemetry.counter(metric, Some(t.as_str())))
        };
        Self {
            datagrams: per_transport(InternalMetric::DogstatsdDatagrams),
            bytes: per_transport(InternalMetric::DogstatsdBytes),
            read_errors: per_transport(InternalMetric::DogstatsdReadErrors),
            origin_errors: telemetry.counter(
                InternalMetric::DogstatsdOriginDetectionErrors,
                Some("unresolved"),
            ),
        }
    }

    fn count(&self, transport: Transport, bytes: usize) {
        let i = transport as usize;
        self.datagrams[i].increment(1);
        self.bytes[i].increment(bytes as u64);
    }

    fn read_error(&self, transport: Transport) {
        self.read_errors[transport as usize].increment(1);
    }
}

/// The running listeners; dropping them stops them.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket_paths: Vec<PathBuf>,
    /// Where UDP is bound (the real port when `0` was asked for).
    pub udp_addr: Option<SocketAddr>,
}

impl Listeners {
    /// Binds every configured socket (an error names the socket and the key to change) and
    /// starts receiving into `sink`.
    pub fn start(
        config: &ListenerConfig,
        sink: Sink,
        stats: Arc<ListenerStats>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let resolver = Arc::new(Mutex::new(OriginResolver::new(config.procfs.clone())));
        let mut listeners = Self {
            stop: stop.clone(),
            threads: Vec::new(),
            socket_paths: Vec::new(),
            udp_addr: None,
        };
        let context =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        if let Some(path) = &config.socket {
            let socket = bind_unix_datagram(path, config).map_err(context(format!(
                "cannot listen on {} (`dogstatsd_socket`)",
                path.display()
            )))?;
            listeners.socket_paths.push(path.clone());
            let receive = UnixDatagramReceiver {
                socket,
                origin_detection: config.origin_detection,
                resolver: resolver.clone(),
                origin_errors: stats.origin_errors.clone(),
            };
            listeners.spawn(
                "kennel-dsd-uds",
                config,
                sink.clone(),
                stats.clone(),
                receive,
            )?;
        }
        if let Some(addr) = config.udp {
            let socket = UdpSocket::bind(addr).map_err(context(format!(
                "cannot listen on UDP {addr} (`dogstatsd_port`)"
            )))?;
            socket.set_read_timeout(Some(STOP_CHECK))?;
            set_receive_buffer(&socket, config.so_rcvbuf);
            listeners.udp_addr = Some(socket.local_addr()?);
            listeners.spawn(
                "kennel-dsd-udp",
                config,
                sink.clone(),
                stats.clone(),
                UdpReceiver { socket },
            )?;
        }
        if let Some(path) = &config.stream_socket {
            let listener = bind_unix_stream(path).map_err(context(format!(
                "cannot listen on {} (`dogstatsd_stream_socket`)",
                path.display()
            )))?;
            listeners.socket_paths.push(path.clone());
            let accept = StreamAcceptor {
                listener,
                config: config.clone(),
                resolver,
                sink: sink.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name("kennel-dsd-stream".to_owned())
                .spawn(move || accept.run())?;
            listeners.threads.push(thread);
        }
        Ok(listeners)
    }

    fn spawn(
        &mut self,
        name: &str,
        config: &ListenerConfig,
        sink: Sink,
        stats: Arc<ListenerStats>,
        mut receiver: impl Receiver + Send + 'static,
    ) -> io::Result<()> {
        let stop = self.stop.clone();
        let buffer_size = config.buffer_size;
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let mut buffer = vec![0u8; buffer_size];
            let transport = receiver.transport();
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Batch::new(transport);
                let mut blocking = true;
                while !batch.full(buffer_size) {
                    match receiver.receive(&mut buffer, blocking) {
                        Ok(Some((len, origin))) => {
                            stats.count(transport, len);
                            batch.push(&buffer[..len], origin);
                            blocking = false;
                        }
                        Ok(None) => break,
                        Err(error) => {
                            stats.read_error(transport);
                            tracing::debug!(transport = transport.as_str(), %error, "DogStatsD read failed");
                            break;
                        }
                    }
                }
                if !batch.is_empty() && !sink(batch) {
                    return;
                }
            }
        })?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in &self.socket_paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One socket's way of receiving a datagram.
trait Receiver {
    fn transport(&self) -> Transport;
    /// A datagram into `buffer`, its length and origin; `None` when nothing came (a timeout
    /// when `blocking`, or an empty queue when not).
    fn receive(&mut self, buffer: &mut [u8], blocking: bool)
    -> io::Result<Option<(usize, Origin)>>;
}

struct UnixDatagramReceiver {
    socket: UnixDatagram,
    origin_detection: bool,
    resolver: Arc<Mutex<OriginResolver>>,
    origin_errors: Counter,
}

impl Receiver for UnixDatagramReceiver {
    fn transport(&self) -> Transport {
        Transport::UnixDatagram
    }

    fn receive(
        &mut self,
        buffer: &mut [u8],
        blocking: bool,
    ) -> io::Result<Option<(usize, Origin)>> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let flags = if blocking {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        let received = match rustix::net::recvmsg(
            self.socket.as_fd(),
            &mut [io::IoSliceMut::new(buffer)],
            &mut control,
            flags,
        ) {
            Ok(received) => received,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let pid = control.drain().find_map(|message| match message {
            RecvAncillaryMessage::ScmCredentials(ucred) => {
                Some(ucred.pid.as_raw_nonzero().get() as u32)
            }
            _ => None,
        });
        let origin = match (self.origin_detection, pid) {
            (true, Some(pid)) => resolve(&self.resolver, pid, &self.origin_errors),
            _ => Origin::Unknown,
        };
        Ok(Some((received.bytes.min(buffer.len()), origin)))
    }
}

fn resolve(resolver: &Mutex<OriginResolver>, pid: u32, errors: &Counter) -> Origin {
    let mut resolver = resolver.lock().unwrap_or_else(|p| p.into_inner());
    match resolver.resolve(pid, Instant::now()) {
        Ok(origin) => origin,
        Err(error) => {
            errors.increment(1);
            tracing::debug!(pid, %error, "DogStatsD origin detection failed");
            Origin::Unknown
        }
    }
}

struct UdpReceiver {
    socket: UdpSocket,
}

impl Receiver for UdpReceiver {
    fn transport(&self) -> Transport {
        Transport::Udp
    }

    fn receive(
        &mut self,
        buffer: &mut [u8],
        blocking: bool,
    ) -> io::Result<Option<(usize, Origin)>> {
        let flags = if blocking {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        let capacity = buffer.len();
        match rustix::net::recv(self.socket.as_fd(), buffer, flags) {
            Ok((len, _)) => Ok(Some((len.min(capacity), Origin::Unknown))),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

struct StreamAcceptor {
    listener: UnixListener,
    config: ListenerConfig,
    resolver: Arc<Mutex<OriginResolver>>,
    sink: Sink,
    stats: Arc<ListenerStats>,
    stop: Arc<AtomicBool>,
}

impl StreamAcceptor {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "DogStatsD stream socket: accept failed");
                    std::thread::sleep(STOP_CHECK);
                    continue;
                }
            };
            let origin = match (
                self.config.origin_detection,
                rustix::net::sockopt::socket_peercred(&stream),
            ) {
                (true, Ok(ucred)) => resolve(
                    &self.resolver,
                    ucred.pid.as_raw_nonzero().get() as u32,
                    &self.stats.origin_errors,
                ),
                _ => Origin::Unknown,
            };
            let (sink, stats, stop) = (self.sink.clone(), self.stats.clone(), self.stop.clone());
            let buffer_size = self.config.buffer_size;
            let spawned = std::thread::Builder::new()
                .name("kennel-dsd-conn".to_owned())
                .spawn(move || read_frames(stream, origin, buffer_size, &sink, &stats, &stop));
            if let Err(error) = spawned {
                tracing::warn!(%error, "DogStatsD stream socket: cannot serve a connection");
            }
        }
    }
}

/// Reads length-prefixed frames until the peer closes, sends a bad frame, or the listener stops.
fn read_frames(
    mut stream: UnixStream,
    origin: Origin,
    buffer_size: usize,
    sink: &Sink,
    stats: &ListenerStats,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(STOP_CHECK));
    let mut frame = vec![0u8; buffer_size];
    loop {
        let mut prefix = [0u8; 4];
        match read_full(&mut stream, &mut prefix, stop) {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                stats.read_error(Transport::UnixStream);
                return;
            }
        }
        let len = u32::from_le_bytes(prefix) as usize;
        if len > buffer_size {
            stats.read_error(Transport::UnixStream);
            tracing::warn!(
                len,
                buffer_size,
                "DogStatsD stream frame longer than `dogstatsd_buffer_size`: connection dropped"
            );
            return;
        }
        match read_full(&mut stream, &mut frame[..len], stop) {
            Ok(true) => {}
            _ => {
                stats.read_error(Transport::UnixStream);
                return;
            }
        }
        stats.count(Transport::UnixStream, len);
        let mut batch = Batch::new(Transport::UnixStream);
        batch.push(&frame[..len], origin.clone());
        if !sink(batch) {
            return;
        }
    }
}

/// Fills `buffer`; `Ok(false)` when the peer closed before the first byte or the listener
/// stopped.
fn read_full(stream: &mut UnixStream, buffer: &mut [u8], stop: &AtomicBool) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match stream.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Removes a stale socket at `path` (anything else there is an error) and creates its parent.
fn prepare_socket_path(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn bind_unix_datagram(path: &Path, config: &ListenerConfig) -> io::Result<UnixDatagram> {
    prepare_socket_path(path)?;
    let socket = UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    if config.origin_detection {
        rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    }
    socket.set_read_timeout(Some(STOP_CHECK))?;
    set_receive_buffer(&socket, config.so_rcvbuf);
    Ok(socket)
}

fn bind_unix_stream(path: &Path) -> io::Result<UnixListener> {
    prepare_socket_path(path)?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Asks for a receive buffer of `size` bytes (0 keeps the system's), past the kernel's cap
/// (`net.core.rmem_max`) when the runner is allowed to.
fn set_receive_buffer(socket: &impl AsFd, size: usize) {
    if size == 0 {
        return;
    }
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, size).is_err()
        && let Err(error) = rustix::net::sockopt::set_socket_recv_buffer_size(socket, size)
    {
        tracing::warn!(size, %error, "cannot set the DogStatsD receive buffer size (`dogstatsd_so_rcvbuf`)");
    }
}
