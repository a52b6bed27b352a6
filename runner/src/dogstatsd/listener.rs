//! The DogStatsD listeners: a Unix datagram socket (with origin detection), UDP, and a Unix
//! stream socket (4-byte little-endian length-prefixed frames).
//!
//! Each datagram socket has its own thread that blocks in `recvmmsg` with `MSG_WAITFORONE`: the
//! call waits for the first datagram, then takes whatever else is already queued, up to
//! [`BATCH_PACKETS`], in the same system call. Under load one call returns a full batch; when idle
//! each datagram goes on at once. Blocking threads, rather than tokio tasks, keep the hot receive
//! path free of executor overhead and give the kernel a reader that is always waiting.
//!
//! Buffers:
//! - `recvmmsg` writes into a receive area allocated once per socket: [`BATCH_PACKETS`] slots of
//!   `dogstatsd_buffer_size` bytes (fewer slots when the buffer size is large, so the area stays
//!   under [`RECEIVE_AREA`]), each with its own control buffer, so the kernel's `SCM_CREDENTIALS`
//!   (the sender's pid) comes with every datagram, not once per call.
//! - What arrived is copied, packed end to end, into a [`Batch`], which goes to the aggregator
//!   through one channel send. Packing (a `memcpy` of what was received, tens of bytes per
//!   metric) rather than handing over the receive area keeps a queue of batches behind a busy
//!   aggregator at the size of what was received, not 64 full-size slots each.
//! - A dropped batch (the aggregator has parsed it) returns its buffers to its socket's pool,
//!   bounded at [`POOL_BATCHES`], and the next batch reuses them: in the steady state nothing is
//!   allocated per datagram or per batch. The pool is a mutex taken once per batch on each side,
//!   not per datagram.
//! - Consecutive datagrams from one pid within a call share one origin lookup, so the resolver's
//!   lock is taken once per sender per call.
//!
//! Sockets:
//! - Unix datagram (`dogstatsd_socket`): the parent directory is created, the socket is made
//!   writable by everyone (mode 0722, as the Datadog Agent does, so containers running as any
//!   user can send), and with origin detection `SO_PASSCRED` makes the kernel attach each
//!   sender's pid.
//! - UDP (`dogstatsd_port`): loopback unless `dogstatsd_non_local_traffic`; no origin; the same
//!   `recvmmsg` path without control buffers.
//! - Unix stream (`dogstatsd_stream_socket`): origin from the peer's credentials at connect
//!   time (`SO_PEERCRED`); a frame longer than `dogstatsd_buffer_size` drops the connection. One
//!   frame is one batch; a connection's batches reuse their buffers as the datagram sockets' do.
//!
//! Socket files are shared with other processes, so the runner takes one only when nobody
//! serves it: a socket file already at the path is probed by connecting to it (non-blocking,
//! with the listener's own socket type). Refused (`ECONNREFUSED`) means nothing is bound to it,
//! a leftover of a runner that crashed, and it is replaced; an answer (or a full backlog, or a
//! live socket of another type) means another process serves it, and the listener does not
//! start: the error names the path and the key. Anything else at the path is an error too. On
//! exit a socket file is removed only if it is still the one this runner bound (same device
//! and inode), so a runner never deletes a socket another process put there. The probe and
//! the bind are two steps: two runners started in the same instant can still race; what this
//! prevents is a second runner taking over from one that is running.
//!
//! Truncation: a datagram longer than `dogstatsd_buffer_size` is cut by the kernel, which says
//! so (`MSG_TRUNC`, asked for in the call so that it also reports the datagram's real length).
//! Its lines before the cut are whole and kept; its last line is cut and dropped, not parsed as
//! if whole (a tag `env:production` would become `env:pr`). Each such datagram counts in
//! `kennel.dogstatsd.truncated_datagrams{transport}` and is said in the log at most once per
//! [`LOG_INTERVAL`], with how many were cut since.
//!
//! Stream connections: each is served by a thread of its own (blocking reads, a frame buffer of
//! `dogstatsd_buffer_size` bytes), so they are capped at `dogstatsd_stream_max_connections` open
//! at once: the stream socket takes at most that many threads (plus its accepting thread) and
//! that many frame buffers. A connection past the cap is closed as soon as it is accepted,
//! counted in `kennel.dogstatsd.stream_connections_refused` and said in the log at most once
//! per [`LOG_INTERVAL`]. Serving every connection from one thread (epoll) would lift the cap's
//! reason to exist; it is not done: clients hold a few long-lived connections, not thousands.
//!
//! Every socket gets a large receive buffer (`dogstatsd_so_rcvbuf`), forced past the kernel's
//! default cap when the runner may do so, so bursts queue in the kernel rather than being
//! dropped.
//!
//! `recvmmsg` comes from `libc`: rustix, used for every other socket call here, offers
//! `sendmmsg` but not `recvmmsg`.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::origin::{Origin, OriginResolver};
use crate::health::{self, Health};
use crate::telemetry::{Counter, InternalMetric, Telemetry};

/// Datagrams received by one `recvmmsg` and handed on together, at most.
pub(crate) const BATCH_PACKETS: usize = 64;
/// Bytes handed on together, about: a batch holds what was received, packed, and is handed on
/// before it would pass this.
const BATCH_BYTES: usize = 64 << 10;
/// The most a socket's receive area takes: with a large `dogstatsd_buffer_size`, one call
/// receives fewer datagrams rather than the area growing to 64 of them.
const RECEIVE_AREA: usize = 1 << 20;
/// Dropped batches whose buffers a socket keeps for reuse, at most. A burst that queued more
/// batches than this frees the rest once the aggregator has caught up.
const POOL_BATCHES: usize = 32;
/// How often a blocked receive wakes up to see whether the listener was stopped.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// A repeated warning (a cut datagram, a refused connection) is said at most once per
/// interval, with how many times it happened since.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How the datagrams came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    UnixDatagram,
    UnixStream,
}

impl Transport {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::UnixDatagram => "uds",
            Self::UnixStream => "uds_stream",
        }
    }
}

/// One datagram of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    range: Range<usize>,
    pub(crate) origin: Origin,
}

/// Datagrams received together, from one socket, in one buffer. Dropping it gives its buffers
/// back to the socket's pool.
#[derive(Debug)]
pub struct Batch {
    pub transport: Transport,
    data: Vec<u8>,
    packets: Vec<Packet>,
    pool: Option<Arc<Pool>>,
}

impl Batch {
    /// Each datagram's bytes and origin.
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], &Origin)> {
        self.packets
            .iter()
            .map(|p| (&self.data[p.range.clone()], &p.origin))
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    fn push(&mut self, bytes: &[u8], origin: Origin) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.packets.push(Packet {
            range: start..self.data.len(),
            origin,
        });
    }

    /// Whether a datagram of `len` bytes should go in the next batch.
    fn full(&self, len: usize) -> bool {
        !self.packets.is_empty()
            && (self.packets.len() >= BATCH_PACKETS || self.data.len() + len > BATCH_BYTES)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.put(
                std::mem::take(&mut self.data),
                std::mem::take(&mut self.packets),
            );
        }
    }
}

/// The buffers of dropped batches, for the next ones.
#[derive(Debug, Default)]
struct Pool {
    free: Mutex<Vec<(Vec<u8>, Vec<Packet>)>>,
}

impl Pool {
    /// An empty batch, on recycled buffers when there are some.
    fn batch(self: &Arc<Self>, transport: Transport) -> Batch {
        let (data, packets) = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        Batch {
            transport,
            data,
            packets,
            pool: Some(self.clone()),
        }
    }

    fn put(&self, mut data: Vec<u8>, mut packets: Vec<Packet>) {
        // Grown past what a batch of ordinary datagrams needs (growth doubles, so up to twice
        // `BATCH_BYTES`) by one datagram or stream frame of up to `dogstatsd_buffer_size`
        // (1 MiB): not worth keeping.
        if data.capacity() > 2 * BATCH_BYTES {
            return;
        }
        data.clear();
        // Drops the origins' references here, outside the lock.
        packets.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < POOL_BATCHES {
            free.push((data, packets));
        }
    }
}

/// Where batches go; `false` means the receiver is gone and the listener should stop.
pub(crate) type Sink = Arc<dyn Fn(Batch) -> bool + Send + Sync>;

/// The listeners' settings (the runner's `dogstatsd_*` keys).
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub socket: Option<PathBuf>,
    pub stream_socket: Option<PathBuf>,
    pub udp: Option<SocketAddr>,
    pub origin_detection: bool,
    pub buffer_size: usize,
    pub so_rcvbuf: usize,
    /// Stream connections served at once, at most.
    pub stream_max_connections: usize,
    pub procfs: PathBuf,
}

/// The listeners' counters, in the runner's own telemetry (`kennel.dogstatsd.*`).
#[derive(Debug, Clone)]
pub struct ListenerStats {
    datagrams: [Counter; 3],
    bytes: [Counter; 3],
    read_errors: [Counter; 3],
    truncated: [Counter; 3],
    refused_connections: Counter,
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
            truncated: per_transport(InternalMetric::DogstatsdTruncatedDatagrams),
            refused_connections: telemetry
                .counter(InternalMetric::DogstatsdStreamConnectionsRefused, None),
            origin_errors: telemetry.counter(
                InternalMetric::DogstatsdOriginDetectionErrors,
                Some("unresolved"),
            ),
        }
    }

    fn count(&self, transport: Transport, datagrams: usize, bytes: usize) {
        let i = transport as usize;
        self.datagrams[i].increment(datagrams as u64);
        self.bytes[i].increment(bytes as u64);
    }

    fn read_error(&self, transport: Transport) {
        self.read_errors[transport as usize].increment(1);
    }
}

/// The running listeners; dropping them stops them.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    /// Test builds only: the listeners' threads panic at their next turn.
    #[cfg(feature = "fault-injection")]
    panic: Arc<AtomicBool>,
    health: Health,
    threads: Vec<JoinHandle<Option<()>>>,
    socket_files: Vec<SocketFile>,
    /// Where UDP is bound (the real port when `0` was asked for).
    pub udp_addr: Option<SocketAddr>,
}

impl Listeners {
    /// Binds every configured socket (an error names the socket and the key to change) and
    /// starts receiving into `sink`. Each socket's thread is a required health component
    /// (`dogstatsd:<transport>`): a listener that dies turns `/health` red.
    pub fn start(
        config: &ListenerConfig,
        sink: Sink,
        stats: Arc<ListenerStats>,
        health: &Health,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let resolver = Arc::new(Mutex::new(OriginResolver::new(config.procfs.clone())));
        let mut listeners = Self {
            #[cfg(feature = "fault-injection")]
            panic: Arc::new(AtomicBool::new(false)),
            health: health.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
            socket_files: Vec::new(),
            udp_addr: None,
        };
        let context =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        if let Some(path) = &config.socket {
            let (socket, file) = bind_unix_datagram(path, config).map_err(context(format!(
                "cannot listen on {} (`dogstatsd_socket`)",
                path.display()
            )))?;
            listeners.socket_files.push(file);
            let socket = DatagramSocket {
                fd: socket.into(),
                transport: Transport::UnixDatagram,
                origins: config.origin_detection.then(|| Origins {
                    resolver: resolver.clone(),
                    errors: stats.origin_errors.clone(),
                }),
            };
            listeners.spawn(
                "kennel-dsd-uds",
                config,
                sink.clone(),
                stats.clone(),
                socket,
            )?;
        }
        if let Some(addr) = config.udp {
            let socket = UdpSocket::bind(addr).map_err(context(format!(
                "cannot listen on UDP {addr} (`dogstatsd_port`)"
            )))?;
            socket.set_read_timeout(Some(STOP_CHECK))?;
            set_receive_buffer(&socket, config.so_rcvbuf);
            listeners.udp_addr = Some(socket.local_addr()?);
            let socket = DatagramSocket {
                fd: socket.into(),
                transport: Transport::Udp,
                origins: None,
            };
            listeners.spawn(
                "kennel-dsd-udp",
                config,
                sink.clone(),
                stats.clone(),
                socket,
            )?;
        }
        if let Some(path) = &config.stream_socket {
            let (listener, file) = bind_unix_stream(path).map_err(context(format!(
                "cannot listen on {} (`dogstatsd_stream_socket`)",
                path.display()
            )))?;
            listeners.socket_files.push(file);
            let accept = StreamAcceptor {
                listener,
                config: config.clone(),
                resolver,
                sink: sink.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                open: Arc::new(AtomicUsize::new(0)),
                refusals: Throttled::default(),
            };
            let reporter = health.register("dogstatsd:unix_stream", true);
            let thread = health::spawn_thread("kennel-dsd-stream", reporter, move || accept.run())?;
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
        socket: DatagramSocket,
    ) -> io::Result<()> {
        let stop = self.stop.clone();
        #[cfg(feature = "fault-injection")]
        let panic = self.panic.clone();
        let buffer_size = config.buffer_size;
        let reporter = self
            .health
            .register(format!("dogstatsd:{}", socket.transport.as_str()), true);
        let thread = health::spawn_thread(name, reporter, move || {
            #[cfg(feature = "fault-injection")]
            let stop = &Turn { stop, panic };
            #[cfg(not(feature = "fault-injection"))]
            let stop = &*stop;
            socket.run(buffer_size, &sink, &stats, stop);
        })?;
        self.threads.push(thread);
        Ok(())
    }

    /// Test builds only: every datagram listener panics at its next turn, as a bug would.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn inject_panic(&self) {
        self.panic.store(true, Ordering::Relaxed);
    }
}

/// Test builds: the stop flag, and a panic on demand at the same check.
#[cfg(feature = "fault-injection")]
struct Turn {
    stop: Arc<AtomicBool>,
    panic: Arc<AtomicBool>,
}

#[cfg(feature = "fault-injection")]
impl Turn {
    fn load(&self, order: Ordering) -> bool {
        assert!(!self.panic.load(order), "injected fault");
        self.stop.load(order)
    }
}

#[cfg(feature = "fault-injection")]
type StopFlag = Turn;
#[cfg(not(feature = "fault-injection"))]
type StopFlag = AtomicBool;

/// Clients send to the Unix datagram socket without blocking, and the kernel queues only
/// `net.unix.max_dgram_qlen` datagrams per socket (10 by default): past that, a burst is dropped
/// by the clients before the runner sees it. The setting is the host's, so say so rather than
/// change it.
pub(crate) fn warn_on_small_datagram_queue() {
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|q| q.trim().parse::<u32>().ok());
    if let Some(qlen) = qlen
        && qlen < 512
    {
        tracing::warn!(
            qlen,
            "net.unix.max_dgram_qlen is small: DogStatsD clients will drop bursts; raise it with `sysctl -w net.unix.max_dgram_qlen=1024`"
        );
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Each removes its file if it is still the one bound (see `SocketFile`).
        self.socket_files.clear();
    }
}

/// A warning said at most once per [`LOG_INTERVAL`], for one thread.
#[derive(Debug, Default)]
struct Throttled {
    last_said: Option<Instant>,
    /// Times it happened since it was last said, this one included.
    since: u64,
}

impl Throttled {
    /// Notes that it happened at `now`; `Some(n)` when it should be said now, `n` being how
    /// many times it happened since it was last said (this time included).
    fn due(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        match self.last_said {
            Some(last) if now.duration_since(last) < LOG_INTERVAL => None,
            _ => {
                self.last_said = Some(now);
                Some(std::mem::take(&mut self.since))
            }
        }
    }
}

/// The whole lines of a datagram that the kernel cut: up to and without its last newline.
/// Nothing when it has none (its one line was cut).
fn whole_lines(cut: &[u8]) -> &[u8] {
    match cut.iter().rposition(|&b| b == b'\n') {
        Some(end) => &cut[..end],
        None => &[],
    }
}

/// A Unix datagram or UDP socket, and how to name its senders.
struct DatagramSocket {
    fd: OwnedFd,
    transport: Transport,
    /// Set when the kernel attaches each sender's pid (`SO_PASSCRED`).
    origins: Option<Origins>,
}

impl DatagramSocket {
    /// Receives until the listener stops or the sink is gone.
    fn run(&self, buffer_size: usize, sink: &Sink, stats: &ListenerStats, stop: &StopFlag) {
        let transport = self.transport;
        let slots = (RECEIVE_AREA / buffer_size).clamp(1, BATCH_PACKETS);
        let mut receiver = MultiReceiver::new(slots, buffer_size, self.origins.is_some());
        let pool = Arc::new(Pool::default());
        let mut truncations = Throttled::default();
        while !stop.load(Ordering::Relaxed) {
            let received = match receiver.receive(self.fd.as_fd()) {
                Ok(0) => continue,
                Ok(received) => received,
                Err(error) => {
                    stats.read_error(transport);
                    tracing::debug!(transport = transport.as_str(), %error, "DogStatsD read failed");
                    continue;
                }
            };
            let mut batch = pool.batch(transport);
            let mut bytes = 0;
            // The origin of the previous datagram's pid: a call's datagrams mostly come from
            // one sender.
            let mut last: Option<(u32, Origin)> = None;
            for i in 0..received {
                let Received {
                    data: mut datagram,
                    pid,
                    length,
                    truncated,
                } = receiver.datagram(i);
                bytes += datagram.len();
                if truncated {
                    stats.truncated[transport as usize].increment(1);
                    if let Some(cut) = truncations.due(Instant::now()) {
                        tracing::warn!(
                            transport = transport.as_str(),
                            length,
                            buffer_size,
                            cut,
                            "DogStatsD datagrams longer than `dogstatsd_buffer_size`: their last, cut line dropped"
                        );
                    }
                    datagram = whole_lines(datagram);
                    if datagram.is_empty() {
                        continue;
                    }
                }
                let origin = match (&self.origins, pid) {
                    (Some(origins), Some(pid)) => match &last {
                        Some((last_pid, origin)) if *last_pid == pid => origin.clone(),
                        _ => {
                            let origin = origins.resolve(pid);
                            last = Some((pid, origin.clone()));
                            origin
                        }
                    },
                    _ => Origin::Unknown,
                };
                if batch.full(datagram.len()) {
                    let full = std::mem::replace(&mut batch, pool.batch(transport));
                    if !sink(full) {
                        return;
                    }
                }
                batch.push(datagram, origin);
            }
            stats.count(transport, received, bytes);
            if !sink(batch) {
                return;
            }
        }
    }
}

/// `recvmmsg` into fixed slots of one receive area, allocated once.
struct MultiReceiver {
    slot_size: usize,
    area: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// One control buffer per slot, for the sender's credentials; empty without origin
    /// detection.
    control: Vec<ControlBuffer>,
}

/// Room for one `SCM_CREDENTIALS` message, aligned for its header.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct ControlBuffer([u8; CONTROL_LEN]);

// SAFETY: `CMSG_SPACE` only computes a size.
const CONTROL_LEN: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::ucred>() as u32) } as usize;

impl MultiReceiver {
    fn new(slots: usize, slot_size: usize, credentials: bool) -> Self {
        Self {
            slot_size,
            area: vec![0; slots * slot_size],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                slots
            ],
            // SAFETY: an all-zero `mmsghdr` is a valid one (null pointers, zero lengths), and
            // the only portable way to build one, as `msghdr` has private padding on some
            // targets.
            headers: vec![unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() }; slots],
            control: if credentials {
                vec![ControlBuffer([0; CONTROL_LEN]); slots]
            } else {
                Vec::new()
            },
        }
    }

    /// Waits (up to the socket's read timeout) for a datagram, then takes every datagram
    /// already queued, up to one per slot. Returns how many came: 0 on a timeout.
    fn receive(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        // The kernel writes back each header's lengths and flags, so all are set again.
        let area = self.area.as_mut_ptr();
        for (i, (iovec, header)) in self.iovecs.iter_mut().zip(&mut self.headers).enumerate() {
            // SAFETY: slot `i` lies within `area`, which has `slots * slot_size` bytes.
            iovec.iov_base = unsafe { area.add(i * self.slot_size) }.cast();
            iovec.iov_len = self.slot_size;
            let message = &mut header.msg_hdr;
            message.msg_name = std::ptr::null_mut();
            message.msg_namelen = 0;
            message.msg_iov = iovec;
            message.msg_iovlen = 1;
            match self.control.get_mut(i) {
                Some(control) => {
                    message.msg_control = control.0.as_mut_ptr().cast();
                    message.msg_controllen = CONTROL_LEN as _;
                }
                None => {
                    message.msg_control = std::ptr::null_mut();
                    message.msg_controllen = 0;
                }
            }
            message.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points to one iovec of its own slot and to its own control
        // buffer (or none), all owned by `self` and alive for the call; `vlen` is the number of
        // headers.
        let received = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as u32,
                // `MSG_TRUNC` in: each header's length is the datagram's real length, even when
                // longer than its slot (UDP, and Unix datagrams since Linux 3.4).
                libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        match usize::try_from(received) {
            Ok(received) => Ok(received),
            Err(_) => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(error),
                }
            }
        }
    }

    /// The `i`-th datagram of the last call.
    fn datagram(&self, i: usize) -> Received<'_> {
        let header = &self.headers[i];
        let length = header.msg_len as usize;
        let kept = length.min(self.slot_size);
        let start = i * self.slot_size;
        let pid = if self.control.is_empty() {
            None
        } else {
            credentials(&header.msg_hdr)
        };
        Received {
            data: &self.area[start..start + kept],
            pid,
            length,
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || length > kept,
        }
    }
}

/// One datagram as received.
#[derive(Debug, PartialEq, Eq)]
struct Received<'a> {
    /// What fitted in its slot.
    data: &'a [u8],
    /// The sender's pid, when the kernel attached it.
    pid: Option<u32>,
    /// Its length as sent.
    length: usize,
    /// Longer than its slot, and cut.
    truncated: bool,
}

/// The pid in a received message's `SCM_CREDENTIALS`, if it has one.
fn credentials(message: &libc::msghdr) -> Option<u32> {
    // SAFETY: the kernel filled the message's control buffer and set `msg_controllen` to what
    // it wrote; the CMSG_* macros walk only within that length, and the payload is read
    // unaligned after checking it is as long as a `ucred`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(message);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                && (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize
            {
                let ucred = libc::CMSG_DATA(cmsg).cast::<libc::ucred>().read_unaligned();
                return Some(ucred.pid as u32);
            }
            cmsg = libc::CMSG_NXTHDR(message, cmsg);
        }
    }
    None
}

/// Origin detection for one socket.
struct Origins {
    resolver: Arc<Mutex<OriginResolver>>,
    errors: Counter,
}

impl Origins {
    fn resolve(&self, pid: u32) -> Origin {
        resolve(&self.resolver, pid, &self.errors)
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

struct StreamAcceptor {
    listener: UnixListener,
    config: ListenerConfig,
    resolver: Arc<Mutex<OriginResolver>>,
    sink: Sink,
    stats: Arc<ListenerStats>,
    stop: Arc<AtomicBool>,
    /// Connections being served.
    open: Arc<AtomicUsize>,
    refusals: Throttled,
}

/// One served stream connection: the count of open ones goes down when it ends.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamAcceptor {
    fn run(mut self) {
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
            let max = self.config.stream_max_connections;
            if self.open.load(Ordering::Relaxed) >= max {
                // Closed here, unread: the client sees the connection end.
                drop(stream);
                self.stats.refused_connections.increment(1);
                if let Some(refused) = self.refusals.due(Instant::now()) {
                    tracing::warn!(
                        max,
                        refused,
                        "DogStatsD stream connections refused: `dogstatsd_stream_max_connections` are open"
                    );
                }
                continue;
            }
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
            self.open.fetch_add(1, Ordering::Relaxed);
            let open = OpenConnection(self.open.clone());
            let spawned = std::thread::Builder::new()
                .name("kennel-dsd-conn".to_owned())
                .spawn(move || {
                    let _open = open;
                    read_frames(stream, origin, buffer_size, &sink, &stats, &stop);
                });
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
    let pool = Arc::new(Pool::default());
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
        stats.count(Transport::UnixStream, 1, len);
        let mut batch = pool.batch(Transport::UnixStream);
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

/// Makes `path` ready to bind a socket of type `kind` to: creates its parent and removes a
/// socket file that nobody serves. A served socket, or anything else at the path, is an error.
fn prepare_socket_path(path: &Path, kind: SocketType) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if served(path, kind)? {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is serving this socket (another runner?): stop it, or give \
                     this runner another path",
                ));
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a process serves the socket file at `path`, found by connecting to it without
/// blocking: refused means nothing is bound to the file (a leftover); an answer, a full backlog
/// (`EAGAIN`) or a live socket of another type (`EPROTOTYPE`) means something is.
fn served(path: &Path, kind: SocketType) -> io::Result<bool> {
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        kind,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let address = SocketAddrUnix::new(path)?;
    match rustix::net::connect(&probe, &address) {
        Ok(()) => Ok(true),
        Err(Errno::CONNREFUSED | Errno::NOENT) => Ok(false),
        Err(Errno::AGAIN | Errno::PROTOTYPE) => Ok(true),
        Err(errno) => {
            let error = io::Error::from(errno);
            Err(io::Error::new(
                error.kind(),
                format!("cannot tell whether another process serves this socket: {error}"),
            ))
        }
    }
}

/// A socket file this runner bound. Dropping it removes the file only if the path still holds
/// this one (same device and inode): what another process put there since is left alone.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket file just bound at `path`.
    fn bound(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether the path still holds the file this runner bound.
    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if !self.still_ours() {
            tracing::info!(
                path = %self.path.display(),
                "DogStatsD socket file replaced by another process: left in place"
            );
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the DogStatsD socket file");
        }
    }
}

fn bind_unix_datagram(
    path: &Path,
    config: &ListenerConfig,
) -> io::Result<(UnixDatagram, SocketFile)> {
    prepare_socket_path(path, SocketType::DGRAM)?;
    let socket = UnixDatagram::bind(path)?;
    let file = SocketFile::bound(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    if config.origin_detection {
        rustix::net::sockopt::set_socket_passcred(&socket, true)?;
    }
    socket.set_read_timeout(Some(STOP_CHECK))?;
    set_receive_buffer(&socket, config.so_rcvbuf);
    Ok((socket, file))
}

fn bind_unix_stream(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    prepare_socket_path(path, SocketType::STREAM)?;
    let listener = UnixListener::bind(path)?;
    let file = SocketFile::bound(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722))?;
    listener.set_nonblocking(true)?;
    Ok((listener, file))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(dir: &Path) -> (UnixDatagram, PathBuf) {
        let path = dir.join("dsd.socket");
        let socket = UnixDatagram::bind(&path).unwrap();
        rustix::net::sockopt::set_socket_passcred(&socket, true).unwrap();
        socket.set_read_timeout(Some(STOP_CHECK)).unwrap();
        (socket, path)
    }

    #[test]
    fn one_call_takes_every_queued_datagram_each_with_its_senders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = bound(dir.path());
        let sender = UnixDatagram::unbound().unwrap();
        for message in ["a:1|c", "bb:2|g", "ccc:3|h"] {
            sender.send_to(message.as_bytes(), &path).unwrap();
        }
        let mut receiver = MultiReceiver::new(BATCH_PACKETS, 512, true);
        assert_eq!(receiver.receive(socket.as_fd()).unwrap(), 3);
        let got: Vec<_> = (0..3)
            .map(|i| {
                let r = receiver.datagram(i);
                (r.data, r.pid, r.truncated)
            })
            .collect();
        let me = Some(std::process::id());
        assert_eq!(
            got,
            [
                (&b"a:1|c"[..], me, false),
                (&b"bb:2|g"[..], me, false),
                (&b"ccc:3|h"[..], me, false)
            ]
        );
    }

    #[test]
    fn a_datagram_longer_than_the_buffer_is_cut_and_an_idle_socket_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = bound(dir.path());
        let mut receiver = MultiReceiver::new(4, 8, false);
        assert_eq!(receiver.receive(socket.as_fd()).unwrap(), 0, "timed out");
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to(b"long.metric.name:1|c", &path).unwrap();
        sender.send_to(b"a:1|c", &path).unwrap();
        sender.send_to(b"b:12|c\n", &path).unwrap();
        assert_eq!(receiver.receive(socket.as_fd()).unwrap(), 3);
        let got: Vec<_> = (0..3).map(|i| receiver.datagram(i)).collect();
        assert_eq!(
            got,
            [
                Received {
                    data: b"long.met",
                    pid: None,
                    length: 20,
                    truncated: true
                },
                Received {
                    data: b"a:1|c",
                    pid: None,
                    length: 5,
                    truncated: false
                },
                Received {
                    data: b"b:12|c\n",
                    pid: None,
                    length: 7,
                    truncated: false
                },
            ],
            "the kernel says which were cut, and their real length"
        );
    }

    #[test]
    fn udp_datagrams_longer_than_the_buffer_are_flagged_too() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(STOP_CHECK)).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(
                b"x:1|c\nlong:1|c|#env:production",
                socket.local_addr().unwrap(),
            )
            .unwrap();
        let mut receiver = MultiReceiver::new(1, 16, false);
        assert_eq!(receiver.receive(socket.as_fd()).unwrap(), 1);
        let got = receiver.datagram(0);
        assert_eq!(
            (got.data, got.length, got.truncated),
            (&b"x:1|c\nlong:1|c|#"[..], 30, true)
        );
        assert_eq!(whole_lines(got.data), b"x:1|c");
    }

    #[test]
    fn a_cut_datagram_keeps_only_its_whole_lines() {
        for (cut, kept) in [
            (&b"a:1|c\nb:2|c\nc:3|c|#env:pr"[..], &b"a:1|c\nb:2|c"[..]),
            (b"a:1|c\n", b"a:1|c"),
            (b"a:1|c|#env:pr", b""),
            (b"", b""),
        ] {
            assert_eq!(whole_lines(cut), kept, "{:?}", String::from_utf8_lossy(cut));
        }
    }

    #[test]
    fn a_repeated_warning_is_said_once_per_interval_with_how_often_it_happened() {
        let start = Instant::now();
        let mut throttled = Throttled::default();
        assert_eq!(throttled.due(start), Some(1), "the first is said");
        assert_eq!(throttled.due(start + Duration::from_secs(1)), None);
        assert_eq!(throttled.due(start + LOG_INTERVAL / 2), None);
        assert_eq!(
            throttled.due(start + LOG_INTERVAL),
            Some(3),
            "said again with the two held back and this one"
        );
        assert_eq!(
            throttled.due(start + LOG_INTERVAL + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn a_socket_file_nobody_serves_is_replaced_and_a_served_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [SocketType::DGRAM, SocketType::STREAM] {
            let path = dir.path().join(format!("{kind:?}.socket"));
            // Left behind by a process that is gone.
            drop(UnixDatagram::bind(&path).unwrap());
            prepare_socket_path(&path, kind).expect("a stale socket is replaced");
            assert!(!path.exists());

            let datagram = UnixDatagram::bind(&path).unwrap();
            let error = prepare_socket_path(&path, kind).expect_err("served");
            assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{kind:?}: {error}");
            assert!(path.exists(), "left in place");
            drop(datagram);
            std::fs::remove_file(&path).unwrap();

            let stream = UnixListener::bind(&path).unwrap();
            let error = prepare_socket_path(&path, kind).expect_err("served");
            assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{kind:?}: {error}");
            drop(stream);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_socket_file_is_removed_on_exit_only_while_it_is_the_one_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsd.socket");
        let ours = UnixDatagram::bind(&path).unwrap();
        let file = SocketFile::bound(&path).unwrap();
        drop(file);
        assert!(!path.exists(), "ours: removed");
        drop(ours);

        let _ours = UnixDatagram::bind(&path).unwrap();
        let file = SocketFile::bound(&path).unwrap();
        // Another process replaces it.
        std::fs::remove_file(&path).unwrap();
        let _theirs = UnixDatagram::bind(&path).unwrap();
        let theirs = std::fs::symlink_metadata(&path).unwrap().ino();
        drop(file);
        assert_eq!(
            std::fs::symlink_metadata(&path).map(|m| m.ino()).ok(),
            Some(theirs),
            "theirs: left in place"
        );
    }

    #[test]
    fn a_dropped_batch_gives_its_buffers_to_the_next_one() {
        let pool = Arc::new(Pool::default());
        let mut first = pool.batch(Transport::Udp);
        first.push(b"x:1|c", Origin::Unknown);
        let buffer = first.data.as_ptr();
        drop(first);
        let mut second = pool.batch(Transport::Udp);
        assert!(second.is_empty());
        second.push(b"y:2|c", Origin::Host(1));
        assert_eq!(second.data.as_ptr(), buffer, "the same allocation");
        assert_eq!(
            second.packets().collect::<Vec<_>>(),
            [(&b"y:2|c"[..], &Origin::Host(1))]
        );
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_ordinary_buffers() {
        let pool = Arc::new(Pool::default());
        let batches: Vec<Batch> = (0..POOL_BATCHES + 5)
            .map(|_| {
                let mut batch = pool.batch(Transport::Udp);
                batch.push(b"x:1|c", Origin::Unknown);
                batch
            })
            .collect();
        drop(batches);
        assert_eq!(pool.free.lock().unwrap().len(), POOL_BATCHES);

        let pool = Arc::new(Pool::default());
        let mut huge = pool.batch(Transport::UnixStream);
        huge.push(&vec![b'x'; 4 * BATCH_BYTES], Origin::Unknown);
        drop(huge);
        assert!(pool.free.lock().unwrap().is_empty(), "not kept");
    }

    #[test]
    fn batches_are_cut_at_their_datagram_and_byte_limits() {
        let pool = Arc::new(Pool::default());
        let mut batch = pool.batch(Transport::Udp);
        assert!(
            !batch.full(BATCH_BYTES * 2),
            "an empty batch takes anything"
        );
        for _ in 0..BATCH_PACKETS {
            assert!(!batch.full(10));
            batch.push(&[b'x'; 10], Origin::Unknown);
        }
        assert!(batch.full(10));
        let mut batch = pool.batch(Transport::Udp);
        batch.push(&vec![b'x'; BATCH_BYTES - 10], Origin::Unknown);
        assert!(!batch.full(10) && batch.full(11));
    }
}
