//! A minimal protobuf wire-format encoder: what the serializers need to write `MetricPayload`,
//! `SketchPayload` and `WriteRequest` straight into a byte buffer.
//!
//! The runner encodes by hand rather than building `prost` structs and encoding them: a flush of
//! 100,000 series would otherwise copy every name and tag into owned message structs only to
//! write them out again. Here a message is written field by field from the flush's own data.
//!
//! Nested messages are length-delimited, and their length is known only once they are written.
//! [`begin`] writes the field's tag and reserves one byte for the length; [`end`] fills it in,
//! and only when the body is 128 bytes or more does it widen the length and shift the body up
//! (a `memmove` of the body, no allocation). Points, resources and labels are all shorter than
//! that, so most messages are never moved.
//!
//! Scalars follow proto3: a field with its default value (0, +0.0, "") is not written, as
//! every proto3 encoder does, and decodes the same. Missing on purpose: groups, fixed32/64
//! other than `double`, and anything the payloads above do not use.

/// The wire types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum WireType {
    Varint = 0,
    Fixed64 = 1,
    Len = 2,
}

/// Appends `value` as a base-128 varint.
#[inline]
pub(crate) fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// How many bytes [`varint`] writes for `value`.
#[inline]
pub(crate) const fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits, at least one.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// The zigzag mapping of `sint32`: small magnitudes, of either sign, encode short.
#[inline]
pub(crate) const fn zigzag32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

#[inline]
fn tag(buf: &mut Vec<u8>, field: u32, wire: WireType) {
    varint(buf, u64::from(field << 3 | wire as u32));
}

/// An `int64`, `uint32`, `uint64` or enum field (negative `int64`s take ten bytes, as in any
/// protobuf encoder).
#[inline]
pub(crate) fn uint64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(buf, field, WireType::Varint);
        varint(buf, value);
    }
}

/// An `int64` field.
#[inline]
pub(crate) fn int64(buf: &mut Vec<u8>, field: u32, value: i64) {
    uint64(buf, field, value as u64);
}

/// A `double` field. Only +0.0 is left out: -0.0 keeps its sign.
#[inline]
pub(crate) fn double(buf: &mut Vec<u8>, field: u32, value: f64) {
    if value.to_bits() != 0 {
        tag(buf, field, WireType::Fixed64);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A `string` or `bytes` field.
#[inline]
pub(crate) fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        tag(buf, field, WireType::Len);
        varint(buf, value.len() as u64);
        buf.extend_from_slice(value);
    }
}

/// A `string` field.
#[inline]
pub(crate) fn string(buf: &mut Vec<u8>, field: u32, value: &str) {
    bytes(buf, field, value.as_bytes());
}

/// A nested message (or packed field) being written: hand it back to [`end`].
#[must_use = "a nested message must be closed with `end`"]
#[derive(Debug)]
pub(crate) struct Nested {
    /// Where the field's tag starts.
    start: usize,
    /// Where the body starts; the length byte is just before it.
    body: usize,
}

/// Starts a length-delimited field (a nested message or a packed repeated field): everything
/// appended to `buf` until [`end`] is its body. An empty body is still written, as a
/// zero-length field: a nested message is present even when all its fields are defaults.
#[inline]
pub(crate) fn begin(buf: &mut Vec<u8>, field: u32) -> Nested {
    let start = buf.len();
    tag(buf, field, WireType::Len);
    buf.push(0);
    Nested {
        start,
        body: buf.len(),
    }
}

/// Closes a field opened by [`begin`], writing its length.
#[inline]
pub(crate) fn end(buf: &mut Vec<u8>, nested: Nested) {
    let len = buf.len() - nested.body;
    if len < 0x80 {
        buf[nested.body - 1] = len as u8;
        return;
    }
    let extra = varint_len(len as u64) - 1;
    let old_end = buf.len();
    buf.resize(old_end + extra, 0);
    buf.copy_within(nested.body..old_end, nested.body + extra);
    let mut at = nested.body - 1;
    let mut value = len;
    while value >= 0x80 {
        buf[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    buf[at] = value as u8;
}

/// A packed `repeated sint32` field; nothing when `values` is empty.
pub(crate) fn packed_sint32(buf: &mut Vec<u8>, field: u32, values: impl Iterator<Item = i32>) {
    let nested = begin(buf, field);
    for value in values {
        varint(buf, u64::from(zigzag32(value)));
    }
    close_packed(buf, nested);
}

/// A packed `repeated uint32` field; nothing when `values` is empty.
pub(crate) fn packed_uint32(buf: &mut Vec<u8>, field: u32, values: impl Iterator<Item = u32>) {
    let nested = begin(buf, field);
    for value in values {
        varint(buf, u64::from(value));
    }
    close_packed(buf, nested);
}

/// Closes a packed field, removing it if it holds nothing (proto3 writes no empty packed field).
fn close_packed(buf: &mut Vec<u8>, nested: Nested) {
    if buf.len() == nested.body {
        buf.truncate(nested.start);
        return;
    }
    end(buf, nested);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn varints_match_their_length() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            assert_eq!(
                prost::encoding::decode_varint(&mut &buf[..]).unwrap(),
                value
            );
        }
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_numbers() {
        assert_eq!(zigzag32(0), 0);
        assert_eq!(zigzag32(-1), 1);
        assert_eq!(zigzag32(1), 2);
        assert_eq!(zigzag32(i32::MIN), u32::MAX);
        assert_eq!(zigzag32(i32::MAX), u32::MAX - 1);
    }

    /// A message with every kind of field this module writes, to compare with prost's encoding.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Everything {
        #[prost(int64, tag = "1")]
        int: i64,
        #[prost(double, tag = "2")]
        real: f64,
        #[prost(string, tag = "3")]
        text: String,
        #[prost(message, repeated, tag = "4")]
        children: Vec<Everything>,
        #[prost(sint32, repeated, tag = "5")]
        keys: Vec<i32>,
        #[prost(uint32, repeated, tag = "6")]
        counts: Vec<u32>,
    }

    fn encode(message: &Everything, buf: &mut Vec<u8>) {
        int64(buf, 1, message.int);
        double(buf, 2, message.real);
        string(buf, 3, &message.text);
        for child in &message.children {
            let nested = begin(buf, 4);
            encode(child, buf);
            end(buf, nested);
        }
        packed_sint32(buf, 5, message.keys.iter().copied());
        packed_uint32(buf, 6, message.counts.iter().copied());
    }

    #[test]
    fn the_encoding_is_prosts_byte_for_byte() {
        let leaf = |text: &str| Everything {
            int: -3,
            real: -2.5,
            text: text.to_owned(),
            children: Vec::new(),
            keys: vec![-1, 0, 1, i32::MIN, i32::MAX],
            counts: vec![0, 300, u32::MAX],
        };
        let message = Everything {
            int: i64::MAX,
            real: 1.5,
            text: "é".repeat(100),
            children: vec![
                leaf(""),
                leaf(&"x".repeat(200)),
                leaf(&"y".repeat(20_000)),
                Everything::default(),
            ],
            keys: Vec::new(),
            counts: (0..1000).collect(),
        };
        let mut buf = Vec::new();
        encode(&message, &mut buf);
        assert!(buf == message.encode_to_vec(), "the encodings differ");
        assert_eq!(Everything::decode(&buf[..]).unwrap(), message);
    }

    #[test]
    fn negative_zero_keeps_its_sign() {
        // prost leaves -0.0 out like +0.0, and so loses its sign; this encoder keeps it.
        let mut buf = Vec::new();
        double(&mut buf, 2, -0.0);
        let decoded = Everything::decode(&buf[..]).unwrap();
        assert!(decoded.real == 0.0 && decoded.real.is_sign_negative());
        buf.clear();
        double(&mut buf, 2, 0.0);
        assert!(buf.is_empty());
    }
}
