//! Feeds arbitrary bytes to the DogStatsD parser as one datagram and checks what every parse
//! guarantees: no panic, well-formed messages, zero-copy strings, and agreement between the
//! ways of parsing the same bytes.

#![no_main]

use std::fmt::Write as _;

use libfuzzer_sys::fuzz_target;
use kennel_parsers::dogstatsd::{
    ContainerRef, Message, MessageKind, Messages, MetricKind, MetricMessage, MetricValue,
    ParseError, ParseErrorReason, parse_datagram, parse_message,
};

fuzz_target!(|datagram: &[u8]| {
    let mut from_callback = Vec::new();
    parse_datagram(datagram, |result| {
        check(datagram, &result);
        from_callback.push(result);
    });

    // The iterator gives the same messages as the callback.
    let from_iterator: Vec<_> = Messages::new(datagram).collect();
    assert_eq!(from_iterator, from_callback);

    // Splitting the lines by hand and parsing each gives the same messages too, whether or not
    // the datagram as a whole is valid UTF-8 (the parser's fast and slow paths).
    let by_line: Vec<_> = datagram
        .split(|byte| *byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(parse_message)
        .collect();
    assert_eq!(by_line, from_callback);
});

fn check(datagram: &[u8], result: &Result<Message<'_>, ParseError<'_>>) {
    match result {
        Ok(Message::Metric(metric)) => {
            check_metric(datagram, metric);
            round_trip(metric);
        }
        Ok(Message::Event(event)) => {
            assert!(!event.title.is_empty());
            for text in [&event.title, &event.text] {
                if let std::borrow::Cow::Borrowed(text) = text {
                    assert!(borrows(datagram, text.as_bytes()));
                }
            }
            check_tags(datagram, event.tags.raw(), event.tags.iter());
        }
        Ok(Message::ServiceCheck(check)) => {
            assert!(!check.name.is_empty());
            assert!(borrows(datagram, check.name.as_bytes()));
            assert!(check.status.as_u8() <= 3);
            if let Some(message) = check.message {
                assert!(!message.contains('|'));
            }
            check_tags(datagram, check.tags.raw(), check.tags.iter());
        }
        Err(error) => {
            assert!(!error.message.is_empty());
            assert!(borrows(datagram, error.message));
            assert!(ParseErrorReason::ALL.contains(&error.reason));
            assert_eq!(error.kind, MessageKind::of(error.message));
            let mut shown = String::new();
            write!(shown, "{error}").unwrap();
        }
    }
}

fn check_metric(datagram: &[u8], metric: &MetricMessage<'_>) {
    assert!(!metric.name.is_empty());
    assert!(!metric.name.contains([':', '|', '\n']));
    assert!(borrows(datagram, metric.name.as_bytes()));
    assert!(metric.sample_rate > 0.0 && metric.sample_rate <= 1.0);
    if let Some(timestamp) = metric.timestamp {
        assert!(timestamp >= 1);
        assert!(metric.kind.accepts_timestamp());
    }
    match metric.value {
        MetricValue::Numbers(values) => {
            assert_ne!(metric.kind, MetricKind::Set);
            let all: Vec<f64> = values.iter().collect();
            assert!(!all.is_empty());
            assert_eq!(all.len(), values.len());
            assert_eq!(all[0].to_bits(), values.first().to_bits());
            assert!(all.iter().all(|value| value.is_finite()));
        }
        MetricValue::Set(member) => {
            assert_eq!(metric.kind, MetricKind::Set);
            assert!(!member.is_empty());
            assert!(!member.contains('|'));
            assert!(borrows(datagram, member.as_bytes()));
        }
    }
    check_tags(datagram, metric.tags.raw(), metric.tags.iter());
    if let Some(ContainerRef::Id(id)) = metric.origin.container {
        assert!(!id.is_empty());
        assert!(borrows(datagram, id.as_bytes()));
    }
}

fn check_tags<'a>(datagram: &[u8], raw: &str, tags: impl Iterator<Item = &'a str>) {
    assert!(!raw.contains('|'));
    for tag in tags {
        assert!(!tag.is_empty());
        assert!(!tag.contains(','));
        assert!(borrows(datagram, tag.as_bytes()));
    }
}

/// Writes the metric back in the wire format and parses it again: it must come back the same.
fn round_trip(metric: &MetricMessage<'_>) {
    let mut wire = format!("{}:", metric.name);
    match metric.value {
        MetricValue::Numbers(values) => {
            for (i, value) in values.iter().enumerate() {
                let separator = if i == 0 { "" } else { ":" };
                // `{}` prints the shortest decimal that reads back as the same f64.
                write!(wire, "{separator}{value}").unwrap();
            }
        }
        MetricValue::Set(member) => wire.push_str(member),
    }
    write!(wire, "|{}", metric.kind.symbol()).unwrap();
    if metric.sample_rate != 1.0 {
        write!(wire, "|@{}", metric.sample_rate).unwrap();
    }
    if !metric.tags.raw().is_empty() {
        write!(wire, "|#{}", metric.tags.raw()).unwrap();
    }
    match metric.origin.container {
        Some(ContainerRef::Id(id)) => write!(wire, "|c:ci-{id}").unwrap(),
        Some(ContainerRef::Inode(inode)) => write!(wire, "|c:in-{inode}").unwrap(),
        None => {}
    }
    if let Some(external) = metric.origin.external {
        write!(wire, "|e:{external}").unwrap();
    }
    if let Some(cardinality) = metric.origin.cardinality {
        write!(wire, "|card:{cardinality}").unwrap();
    }
    if let Some(timestamp) = metric.timestamp {
        write!(wire, "|T{timestamp}").unwrap();
    }
    match parse_message(wire.as_bytes()) {
        Ok(Message::Metric(again)) => assert_eq!(&again, metric, "{wire}"),
        other => panic!("{wire:?} did not parse back: {other:?}"),
    }
}

/// Whether `part` points into `datagram`: the parser copies nothing.
fn borrows(datagram: &[u8], part: &[u8]) -> bool {
    let range = datagram.as_ptr_range();
    let start = part.as_ptr();
    part.is_empty() || (range.start <= start && start as usize + part.len() <= range.end as usize)
}
