//! Compression of the Datadog payloads, and the stream that splits a route's entries into
//! payloads that each stay within the intake's limits.
//!
//! [`Compressor`] is `serializer_compressor_kind`: `zstd` (the Agent's default since 7.x, at
//! `serializer_zstd_compressor_level` 1, which the Agent keeps low for its memory use), `zlib`
//! (sent as `Content-Encoding: deflate`, at zlib's default level as the Agent's) or `none`.
//!
//! [`Stream`] is the Agent's stream compressor (`pkg/serializer/internal/stream`): a payload is
//! a header, entries joined by a separator, and a footer; entries are added one at a time and
//! each is checked against the payload's limits before it goes in:
//! - the uncompressed size, exactly;
//! - the compressed size, conservatively: what is already compressed plus the compression
//!   bound of what is not. When that bound would pass the limit, the pending bytes are
//!   compressed and flushed (at most [`MAX_REPACKS`] times a payload, as the Agent does, since
//!   each flush costs some ratio) so the check runs on the real size;
//! - an optional count of items (`serializer_max_series_points_per_payload`).
//!
//! An entry that does not fit closes the payload and opens the next; one that could not fit
//! even alone is left out and counted in [`Unsent`], so the caller can report it. The stream
//! is kept from flush to flush, with its compression context and buffers.
//!
//! Missing: `gzip` and `lz4` (the Agent has them for other payloads, not for metrics).

use std::io;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use serde::Deserialize;
use zstd::stream::raw::{InBuffer, Operation as _, OutBuffer};

use super::payload::{Encoding, Payload, Route};

/// `serializer_zstd_compressor_level`: the Agent's default.
pub(crate) const ZSTD_LEVEL: i32 = 1;
/// The most times a payload's pending bytes are compressed early to check the compressed
/// size, as in the Agent.
pub(crate) const MAX_REPACKS: u32 = 40;

/// `serializer_compressor_kind`: how Datadog payloads are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compressor {
    /// zstd at level 1 (`Content-Encoding: zstd`). The default.
    #[default]
    Zstd,
    /// zlib (`Content-Encoding: deflate`), for intakes that do not take zstd, such as
    /// VictoriaMetrics' Datadog API.
    Zlib,
    /// No compression.
    None,
}

impl Compressor {
    /// The `Content-Encoding` of what this compressor makes.
    pub(crate) const fn encoding(self) -> Encoding {
        match self {
            Self::Zstd => Encoding::Zstd,
            Self::Zlib => Encoding::Deflate,
            Self::None => Encoding::Identity,
        }
    }

    /// The most `len` bytes can compress to, compressed on their own.
    pub(crate) fn bound(self, len: usize) -> usize {
        match self {
            Self::Zstd => zstd::zstd_safe::compress_bound(len),
            // zlib's `compressBound`.
            Self::Zlib => len + (len >> 12) + (len >> 14) + (len >> 25) + 13,
            Self::None => len,
        }
    }
}

/// What one payload of a route may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes of body, as sent.
    pub(crate) compressed: usize,
    /// Bytes of body, before compression.
    pub(crate) uncompressed: usize,
    /// Items (points, for series).
    pub(crate) items: u32,
}

/// What a serializer could not put in any payload, in items (points, sketch points, service
/// checks, events, samples), by reason. The caller counts it: nothing is dropped silently.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    /// In an entry (a series, a sketch, a check, an event) larger on its own than a payload
    /// may be.
    pub too_large: u64,
    /// Values JSON cannot carry (NaN and the infinities), left out of v1 series.
    pub not_finite: u64,
    /// Remote write: samples at or before the last one sent for their series, which
    /// Prometheus would refuse.
    pub out_of_order: u64,
    /// Remote write: series named like one of another type (a gauge `x_total` and a count
    /// `x`), which would be sent as one series.
    pub conflicting: u64,
    /// Lost to a compression error.
    pub failed: u64,
}

impl Unsent {
    /// Every item left out, whatever the reason.
    pub fn total(&self) -> u64 {
        self.too_large + self.not_finite + self.out_of_order + self.conflicting + self.failed
    }

    pub(crate) fn add(&mut self, other: Self) {
        self.too_large += other.too_large;
        self.not_finite += other.not_finite;
        self.out_of_order += other.out_of_order;
        self.conflicting += other.conflicting;
        self.failed += other.failed;
    }
}

/// What one serialize call made, without the payloads themselves: for load runs, which
/// cannot see payloads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Serialized {
    pub payloads: usize,
    /// Items carried: points, sketch points, service checks, events, samples.
    pub items: u64,
    /// Bytes of body, as sent.
    pub bytes: u64,
    pub unsent: Unsent,
}

impl Serialized {
    pub(crate) fn of(payloads: &[Payload], unsent: Unsent) -> Self {
        Self {
            payloads: payloads.len(),
            items: payloads.iter().map(|p| u64::from(p.items)).sum(),
            bytes: payloads.iter().map(|p| p.body.len() as u64).sum(),
            unsent,
        }
    }
}

/// Why [`Stream::try_add`] did not take an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The payload is full: finish it and add the entry to the next.
    Full,
    /// The entry could not fit even alone. Its items are counted in the stream's [`Unsent`].
    TooLarge,
}

/// The compression state, kept from payload to payload.
enum Engine {
    /// Created at first use: creating it can fail (it allocates its context).
    Zstd(Option<zstd::stream::raw::Encoder<'static>>),
    Zlib(Compress),
    Identity,
}

/// How far to take a compression step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Flush, so that the output holds everything given so far.
    Flush,
    /// End the stream.
    Finish,
}

/// One route's payloads being built: see the module docs.
pub(crate) struct Stream {
    route: Route,
    compressor: Compressor,
    engine: Engine,
    limits: Limits,
    header: Vec<u8>,
    separator: &'static [u8],
    footer: Vec<u8>,
    /// Bytes not compressed yet, the header included while it is.
    pending: Vec<u8>,
    /// The compressed body so far.
    out: Vec<u8>,
    /// Uncompressed bytes already in `out`.
    packed: usize,
    repacks: u32,
    /// Entries in this payload.
    entries: u32,
    /// Items in this payload.
    items: u32,
    unsent: Unsent,
}

impl Stream {
    /// A stream of `route` payloads: `header`, entries separated by `separator`, `footer`.
    pub(crate) fn new(
        route: Route,
        compressor: Compressor,
        limits: Limits,
        header: Vec<u8>,
        separator: &'static [u8],
        footer: Vec<u8>,
    ) -> Self {
        let engine = match compressor {
            Compressor::Zstd => Engine::Zstd(None),
            Compressor::Zlib => Engine::Zlib(Compress::new(Compression::default(), true)),
            Compressor::None => Engine::Identity,
        };
        let mut stream = Self {
            route,
            compressor,
            engine,
            limits,
            header,
            separator,
            footer,
            pending: Vec::new(),
            out: Vec::new(),
            packed: 0,
            repacks: 0,
            entries: 0,
            items: 0,
            unsent: Unsent::default(),
        };
        stream.reset();
        stream
    }

    /// Whether the payload being built has no entry yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Adds `entry`, carrying `items`, to the payload being built: `Err(Full)` when it does
    /// not fit there (call [`Self::finish`] and try again), `Err(TooLarge)` when it could not
    /// fit even alone (it is then counted as unsent).
    pub(crate) fn try_add(&mut self, entry: &[u8], items: u32) -> Result<(), Refused> {
        let alone = self.header.len() + entry.len() + self.footer.len();
        if items > self.limits.items
            || alone > self.limits.uncompressed
            || self.compressor.bound(alone) > self.limits.compressed
        {
            self.unsent.too_large += u64::from(items);
            return Err(Refused::TooLarge);
        }
        if self.entries > 0 && self.items + items > self.limits.items {
            return Err(Refused::Full);
        }
        let separator = if self.entries > 0 {
            self.separator.len()
        } else {
            0
        };
        let added = separator + entry.len();
        if self.packed + self.pending.len() + added + self.footer.len() > self.limits.uncompressed {
            return Err(Refused::Full);
        }
        if !self.fits_compressed(added) {
            if self.pending.is_empty() || self.repacks >= MAX_REPACKS {
                return Err(Refused::Full);
            }
            if let Err(error) = self.pack(Step::Flush) {
                self.fail(&error);
                return self.try_add(entry, items);
            }
            self.repacks += 1;
            if !self.fits_compressed(added) {
                return Err(Refused::Full);
            }
        }
        if self.entries > 0 {
            self.pending.extend_from_slice(self.separator);
        }
        self.pending.extend_from_slice(entry);
        self.entries += 1;
        self.items += items;
        Ok(())
    }

    /// Adds `entry`, finishing the payload into `out` first if it is full. An entry that
    /// cannot fit even alone is counted as unsent.
    pub(crate) fn push(&mut self, entry: &[u8], items: u32, out: &mut Vec<Payload>) {
        if self.try_add(entry, items) == Err(Refused::Full) {
            self.finish(out);
            // An empty payload takes any entry that is not too large.
            let _ = self.try_add(entry, items);
        }
    }

    /// Whether `added` more pending bytes, and the footer, surely compress within the limit.
    fn fits_compressed(&self, added: usize) -> bool {
        let pending = self.pending.len() + added + self.footer.len();
        self.out.len() + self.compressor.bound(pending) <= self.limits.compressed
    }

    /// Closes the payload being built, if it has anything, and appends it to `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<Payload>) {
        if self.entries == 0 {
            return;
        }
        self.pending.extend_from_slice(&self.footer);
        match self.pack(Step::Finish) {
            Ok(()) => {
                // Sized exactly: a queued payload must cost its length, not its buffer's
                // capacity, or retry queues would hold up to twice their bound.
                let mut body = std::mem::take(&mut self.out);
                body.shrink_to_fit();
                out.push(Payload {
                    route: self.route,
                    encoding: self.compressor.encoding(),
                    body: Bytes::from(body),
                    items: self.items,
                });
                self.reset();
            }
            Err(error) => self.fail(&error),
        }
    }

    /// What could not be sent since the last call.
    pub(crate) fn take_unsent(&mut self) -> Unsent {
        std::mem::take(&mut self.unsent)
    }

    /// Counts the payload being built as lost, and starts over.
    fn fail(&mut self, error: &io::Error) {
        tracing::warn!(route = self.route.as_str(), %error, items = self.items, "compression failed: the payload is lost");
        self.unsent.failed += u64::from(self.items);
        self.reset();
    }

    /// Starts a new payload.
    fn reset(&mut self) {
        self.pending.clear();
        self.pending.extend_from_slice(&self.header);
        self.out.clear();
        self.packed = 0;
        self.repacks = 0;
        self.entries = 0;
        self.items = 0;
        match &mut self.engine {
            Engine::Zstd(encoder) => {
                // A failed reset leaves the context in doubt: make a new one at next use.
                if let Some(e) = encoder
                    && e.reinit().is_err()
                {
                    *encoder = None;
                }
            }
            Engine::Zlib(compress) => compress.reset(),
            Engine::Identity => {}
        }
    }

    /// Compresses the pending bytes into `out`.
    fn pack(&mut self, step: Step) -> io::Result<()> {
        let input = &self.pending[..];
        self.out.reserve(self.compressor.bound(input.len()));
        match &mut self.engine {
            Engine::Zstd(encoder) => {
                let encoder = match encoder {
                    Some(encoder) => encoder,
                    None => encoder.insert(zstd::stream::raw::Encoder::new(ZSTD_LEVEL)?),
                };
                zstd_step(encoder, input, &mut self.out, step)?;
            }
            Engine::Zlib(compress) => zlib_step(compress, input, &mut self.out, step)?,
            Engine::Identity => self.out.extend_from_slice(input),
        }
        self.packed += self.pending.len();
        self.pending.clear();
        Ok(())
    }
}

/// Compresses `input` into `out` with zstd, then flushes or ends the frame.
fn zstd_step(
    encoder: &mut zstd::stream::raw::Encoder<'static>,
    input: &[u8],
    out: &mut Vec<u8>,
    step: Step,
) -> io::Result<()> {
    let mut input = InBuffer::around(input);
    while input.pos < input.src.len() {
        spare(out);
        let mut output = OutBuffer::around_pos(out, out.len());
        encoder.run(&mut input, &mut output)?;
    }
    loop {
        spare(out);
        let mut output = OutBuffer::around_pos(out, out.len());
        let left = match step {
            Step::Flush => encoder.flush(&mut output)?,
            Step::Finish => encoder.finish(&mut output, true)?,
        };
        if left == 0 {
            return Ok(());
        }
    }
}

/// Compresses `input` into `out` with zlib, then flushes (a sync flush) or ends the stream.
fn zlib_step(
    compress: &mut Compress,
    input: &[u8],
    out: &mut Vec<u8>,
    step: Step,
) -> io::Result<()> {
    let flush = match step {
        Step::Flush => FlushCompress::Sync,
        Step::Finish => FlushCompress::Finish,
    };
    let start = compress.total_in();
    loop {
        spare(out);
        let consumed = (compress.total_in() - start) as usize;
        let status = compress
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let consumed = (compress.total_in() - start) as usize;
        let done = match (status, step) {
            (Status::StreamEnd, _) => true,
            // All in, and room left over: the flush is complete.
            (_, Step::Flush) => consumed == input.len() && out.len() < out.capacity(),
            (_, Step::Finish) => false,
        };
        if done {
            return Ok(());
        }
    }
}

/// Makes sure `out` has some spare capacity for a compressor to write into.
fn spare(out: &mut Vec<u8>) {
    if out.capacity() - out.len() < 256 {
        out.reserve(out.capacity().max(4096));
    }
}

/// A payload's body, decompressed, for tests.
#[cfg(test)]
pub(crate) fn decompress(payload: &Payload) -> Vec<u8> {
    use std::io::Read as _;

    let mut body = Vec::new();
    match payload.encoding {
        Encoding::Zstd => body = zstd::stream::decode_all(&payload.body[..]).unwrap(),
        Encoding::Deflate => {
            flate2::read::ZlibDecoder::new(&payload.body[..])
                .read_to_end(&mut body)
                .unwrap();
        }
        Encoding::Identity => body = payload.body.to_vec(),
        Encoding::Snappy => {
            body = snap::raw::Decoder::new()
                .decompress_vec(&payload.body)
                .unwrap();
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(compressor: Compressor, limits: Limits) -> Stream {
        Stream::new(
            Route::SeriesV1,
            compressor,
            limits,
            b"[".to_vec(),
            b",",
            b"]".to_vec(),
        )
    }

    const ROOMY: Limits = Limits {
        compressed: usize::MAX,
        uncompressed: usize::MAX,
        items: u32::MAX,
    };

    #[test]
    fn the_compressor_kind_reads_as_the_agents_setting() {
        for (text, compressor) in [
            ("zstd", Compressor::Zstd),
            ("zlib", Compressor::Zlib),
            ("none", Compressor::None),
        ] {
            let parsed: Compressor = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(parsed, compressor);
        }
        assert!(serde_json::from_value::<Compressor>(serde_json::json!("gzip")).is_err());
        assert_eq!(Compressor::default(), Compressor::Zstd);
    }

    #[test]
    fn every_compressor_round_trips_header_entries_and_footer() {
        for compressor in [Compressor::Zstd, Compressor::Zlib, Compressor::None] {
            let mut stream = stream(compressor, ROOMY);
            let mut out = Vec::new();
            for flush in 0..2 {
                for i in 0..1000 {
                    stream.push(format!("{{\"n\":{i}}}").as_bytes(), 2, &mut out);
                }
                stream.finish(&mut out);
                assert_eq!(out.len(), flush + 1);
            }
            for payload in &out {
                assert_eq!(payload.encoding, compressor.encoding());
                assert_eq!(payload.items, 2000);
                let value: Vec<serde_json::Value> =
                    serde_json::from_slice(&decompress(payload)).unwrap();
                assert_eq!(value.len(), 1000);
                assert_eq!(value[999]["n"], 999);
            }
            assert_eq!(stream.take_unsent(), Unsent::default());
        }
    }

    #[test]
    fn an_empty_stream_makes_no_payload() {
        let mut out = Vec::new();
        stream(Compressor::Zstd, ROOMY).finish(&mut out);
        assert!(out.is_empty());
    }

    /// Entries that compress badly (random bytes as hex), so the compressed limit is the one
    /// that binds.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b"0123456789abcdef"[(state & 15) as usize]
            })
            .collect()
    }

    #[test]
    fn payloads_split_under_each_limit_and_lose_nothing() {
        let cases = [
            (
                "compressed",
                Limits {
                    compressed: 20_000,
                    uncompressed: usize::MAX,
                    items: u32::MAX,
                },
            ),
            (
                "uncompressed",
                Limits {
                    compressed: usize::MAX,
                    uncompressed: 30_000,
                    items: u32::MAX,
                },
            ),
            (
                "items",
                Limits {
                    compressed: usize::MAX,
                    uncompressed: usize::MAX,
                    items: 70,
                },
            ),
        ];
        for compressor in [Compressor::Zstd, Compressor::Zlib, Compressor::None] {
            for (name, limits) in cases {
                let mut stream = stream(compressor, limits);
                let mut out = Vec::new();
                let entries: Vec<Vec<u8>> = (0..400)
                    .map(|i| {
                        let mut entry = b"\"".to_vec();
                        entry.extend(noise(i, 300));
                        entry.push(b'"');
                        entry
                    })
                    .collect();
                for entry in &entries {
                    stream.push(entry, 3, &mut out);
                }
                stream.finish(&mut out);
                assert!(
                    out.len() > 2,
                    "{compressor:?} {name}: {} payloads",
                    out.len()
                );
                let mut seen = 0;
                for payload in &out {
                    let body = decompress(payload);
                    assert!(
                        payload.body.len() <= limits.compressed,
                        "{compressor:?} {name}"
                    );
                    assert!(body.len() <= limits.uncompressed, "{compressor:?} {name}");
                    assert!(payload.items <= limits.items, "{compressor:?} {name}");
                    let value: Vec<String> = serde_json::from_slice(&body).unwrap();
                    assert_eq!(payload.items as usize, value.len() * 3);
                    for text in value {
                        assert_eq!(text.as_bytes(), &entries[seen][1..301]);
                        seen += 1;
                    }
                }
                assert_eq!(seen, entries.len(), "{compressor:?} {name}");
                assert_eq!(stream.take_unsent(), Unsent::default());
            }
        }
    }

    #[test]
    fn an_entry_too_large_alone_is_counted_and_the_rest_still_sent() {
        let limits = Limits {
            compressed: 1000,
            uncompressed: 1000,
            items: 10,
        };
        for compressor in [Compressor::Zstd, Compressor::Zlib, Compressor::None] {
            let mut stream = stream(compressor, limits);
            let mut out = Vec::new();
            stream.push(b"1", 1, &mut out);
            stream.push(&[b'2'; 2000], 4, &mut out);
            stream.push(b"3", 11, &mut out);
            stream.push(b"4", 1, &mut out);
            stream.finish(&mut out);
            assert_eq!(out.len(), 1);
            assert_eq!(decompress(&out[0]), b"[1,4]");
            assert_eq!(out[0].items, 2);
            let unsent = stream.take_unsent();
            assert_eq!(unsent.too_large, 15);
            assert_eq!(unsent.total(), 15);
        }
    }
}
