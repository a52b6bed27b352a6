//! The bounds a conf.d file must keep before serde sees it: its length, its nesting, and how
//! much its aliases expand it.
//!
//! serde_norway copies an alias's whole node each time it deserializes the alias. Its own guard
//! (at most a hundred alias jumps per event of the file) still lets the copies grow with the
//! square of the file's length: a 40 KB file holding ten thousand scalars under one anchor and
//! ten thousand aliases to it expands to a hundred million nodes (1.65 GB of RSS). Underneath,
//! libyaml's scanner takes time quadratic in the nesting of flow collections: a 100 KB
//! `[[[[…` cost 23 s of CPU. Both are refused here, in one pass over libyaml's event stream
//! that stops at the first bound crossed, before anything is expanded:
//!
//! - a file is at most [`MAX_FILE_BYTES`] (1 MiB) long;
//! - sequences and mappings nest at most [`MAX_DEPTH`] (64) deep, counting what an alias
//!   expands to where it stands;
//! - aliases add at most the file's length plus [`ALIAS_ALLOWANCE`] (65,536) to the document,
//!   counting one per node and one per byte of scalar, what nested aliases bring included: a
//!   file's aliases may about double it, a small file's may add 64 KiB.
//!
//! The pass costs time proportional to the file (libyaml's scanner looks at most 1,024
//! characters ahead, so the nesting check stops it before its quadratic work) and memory
//! proportional to the number of anchors, never to what the aliases would expand to. It runs the
//! parser serde_norway runs next (libyaml, through `unsafe-libyaml-norway`), so it measures what
//! serde would build, and a file that passes it has no syntax error left for serde to find. A
//! syntax error's message is libyaml's own: fixed phrases and positions, never the file's text.

use std::collections::HashMap;
use std::ffi::{CStr, c_char};
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use unsafe_libyaml_norway as unsafe_libyaml;

/// The longest conf.d file read, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// How deep sequences and mappings may nest.
pub const MAX_DEPTH: usize = 64;
/// What aliases may add to a file beyond its own length, in nodes plus scalar bytes.
pub const ALIAS_ALLOWANCE: u64 = 64 << 10;

/// A bound a file crossed, or a syntax error found on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Breach {
    #[error(
        "the file is {bytes} bytes long: a conf.d file may be at most {MAX_FILE_BYTES} bytes (1 MiB)"
    )]
    TooLarge { bytes: u64 },
    #[error(
        "sequences and mappings nest more than {MAX_DEPTH} levels deep here (what aliases expand to included): refused before parsing"
    )]
    TooDeep { line: usize },
    #[error(
        "aliases expand the file past its length plus {ALIAS_ALLOWANCE} (in nodes and scalar bytes; {limit} here), at this alias: refused before expanding (a YAML alias bomb?)"
    )]
    AliasExpansion { line: usize, limit: u64 },
    #[error(
        "an alias to an anchor that is not defined before it (or to a collection that holds the alias)"
    )]
    UnknownAnchor { line: usize },
    #[error("{message}")]
    Syntax {
        line: Option<usize>,
        message: String,
    },
}

impl Breach {
    /// The 1-based line where the bound was crossed, when it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::TooLarge { .. } => None,
            Self::TooDeep { line }
            | Self::AliasExpansion { line, .. }
            | Self::UnknownAnchor { line } => Some(*line),
            Self::Syntax { line, .. } => *line,
        }
    }

    /// Whether the file is not YAML at all (rather than YAML past a bound).
    pub fn is_syntax(&self) -> bool {
        matches!(self, Self::Syntax { .. })
    }
}

/// Checks `text` against every bound, stopping at the first crossed.
pub fn check(text: &str) -> Result<(), Breach> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Breach::TooLarge {
            bytes: text.len() as u64,
        });
    }
    let alias_limit = (text.len() as u64).saturating_add(ALIAS_ALLOWANCE);
    let mut parser = Parser::new(text)?;
    let mut open: Vec<Open> = Vec::new();
    let mut anchors: HashMap<Box<[u8]>, Node> = HashMap::new();
    let mut added: u64 = 0;
    loop {
        let (event, line) = parser.next()?;
        let (anchor, node) = match event {
            Event::StreamEnd => return Ok(()),
            // Anchors are scoped to their document.
            Event::DocumentStart => {
                anchors.clear();
                continue;
            }
            Event::Other => continue,
            Event::Scalar { anchor, bytes } => (
                anchor,
                Node {
                    size: bytes.saturating_add(1),
                    depth: 0,
                },
            ),
            Event::CollectionStart { anchor } => {
                if open.len() >= MAX_DEPTH {
                    return Err(Breach::TooDeep { line });
                }
                open.push(Open {
                    anchor,
                    size: 1,
                    depth: 0,
                });
                continue;
            }
            Event::CollectionEnd => {
                let Some(closed) = open.pop() else {
                    return Err(Breach::Syntax {
                        line: Some(line),
                        message: "a collection ends that never started".to_owned(),
                    });
                };
                (
                    closed.anchor,
                    Node {
                        size: closed.size,
                        depth: closed.depth + 1,
                    },
                )
            }
            Event::Alias { anchor } => {
                // An anchor is recorded when its node is complete, so an alias inside the
                // collection it names (an infinite document) is unknown here too.
                let Some(&node) = anchors.get(&anchor) else {
                    return Err(Breach::UnknownAnchor { line });
                };
                if open.len() + node.depth > MAX_DEPTH {
                    return Err(Breach::TooDeep { line });
                }
                added = added.saturating_add(node.size);
                if added > alias_limit {
                    return Err(Breach::AliasExpansion {
                        line,
                        limit: alias_limit,
                    });
                }
                (None, node)
            }
        };
        if let Some(anchor) = anchor {
            anchors.insert(anchor, node);
        }
        if let Some(parent) = open.last_mut() {
            parent.size = parent.size.saturating_add(node.size);
            parent.depth = parent.depth.max(node.depth);
        }
    }
}

/// A complete node: what it weighs expanded (one per node, one per scalar byte) and how many
/// levels of collections it holds (0 for a scalar).
#[derive(Debug, Clone, Copy)]
struct Node {
    size: u64,
    depth: usize,
}

/// A collection still open, and what its children weigh so far.
struct Open {
    anchor: Option<Box<[u8]>>,
    size: u64,
    depth: usize,
}

/// The events the bounds need.
enum Event {
    StreamEnd,
    DocumentStart,
    Scalar {
        anchor: Option<Box<[u8]>>,
        bytes: u64,
    },
    CollectionStart {
        anchor: Option<Box<[u8]>>,
    },
    CollectionEnd,
    Alias {
        anchor: Box<[u8]>,
    },
    Other,
}

/// libyaml's event parser over a string.
struct Parser<'text> {
    /// Boxed because libyaml keeps a pointer to the parser itself (its read handler's data);
    /// initialized by `yaml_parser_initialize` before a `Parser` exists.
    sys: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    text: PhantomData<&'text str>,
}

impl<'text> Parser<'text> {
    fn new(text: &'text str) -> Result<Self, Breach> {
        let mut sys = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        let parser = sys.as_mut_ptr();
        // SAFETY: `parser` points to writable memory for a `yaml_parser_t`, which
        // `yaml_parser_initialize` zeroes and sets up; on failure it frees what it allocated,
        // and no `Parser` (whose drop deletes the parser) is made.
        if unsafe { unsafe_libyaml::yaml_parser_initialize(parser) }.fail {
            return Err(Breach::Syntax {
                line: None,
                message: "the YAML parser could not allocate its buffers".to_owned(),
            });
        }
        // SAFETY: the parser is initialized. The input pointer stays valid for `'text`, which
        // the returned `Parser` cannot outlive; libyaml only reads `len` bytes from it.
        unsafe {
            unsafe_libyaml::yaml_parser_set_encoding(parser, unsafe_libyaml::YAML_UTF8_ENCODING);
            unsafe_libyaml::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        }
        Ok(Self {
            sys,
            text: PhantomData,
        })
    }

    /// The next event and its 1-based line.
    fn next(&mut self) -> Result<(Event, usize), Breach> {
        let parser = self.sys.as_mut_ptr();
        let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser is initialized (see `new`) and its input outlives `self`;
        // `yaml_parser_parse` fills `event` (it zeroes it first) or fails, filling nothing
        // that needs freeing.
        if unsafe { unsafe_libyaml::yaml_parser_parse(parser, event.as_mut_ptr()) }.fail {
            // SAFETY: after a failure the parser's error fields are set, and its problem and
            // context are null or libyaml's static NUL-terminated strings.
            return Err(unsafe { syntax_error(&*parser) });
        }
        let event = event.as_mut_ptr();
        // SAFETY: `yaml_parser_parse` succeeded, so `event` is initialized; each union field is
        // read only for the event type that sets it, and anchors are null or NUL-terminated
        // strings owned by the event, copied before `yaml_event_delete` frees them.
        unsafe {
            let line = (*event).start_mark.line as usize + 1;
            let converted = match (*event).type_ {
                unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
                unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_libyaml::YAML_SCALAR_EVENT => Event::Scalar {
                    anchor: anchor((*event).data.scalar.anchor),
                    bytes: (*event).data.scalar.length,
                },
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => Event::CollectionStart {
                    anchor: anchor((*event).data.sequence_start.anchor),
                },
                unsafe_libyaml::YAML_MAPPING_START_EVENT => Event::CollectionStart {
                    anchor: anchor((*event).data.mapping_start.anchor),
                },
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT
                | unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::CollectionEnd,
                unsafe_libyaml::YAML_ALIAS_EVENT => match anchor((*event).data.alias.anchor) {
                    Some(anchor) => Event::Alias { anchor },
                    None => Event::Other,
                },
                _ => Event::Other,
            };
            unsafe_libyaml::yaml_event_delete(event);
            Ok((converted, line))
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: a `Parser` exists only once `yaml_parser_initialize` succeeded, and it is
        // deleted once, here.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}

/// A copy of an event's anchor name.
///
/// # Safety
/// `name` is null or a NUL-terminated string that stays valid for the call.
unsafe fn anchor(name: *const u8) -> Option<Box<[u8]>> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, and NUL-terminated per this function's contract.
    let name = unsafe { CStr::from_ptr(name.cast::<c_char>()) };
    Some(name.to_bytes().into())
}

/// The parser's error, worded as serde_norway words it, without the problem's own position
/// (the line leads the message).
///
/// # Safety
/// `parser` has just failed, so its `problem` and `context` are null or static NUL-terminated
/// strings.
unsafe fn syntax_error(parser: &unsafe_libyaml::yaml_parser_t) -> Breach {
    // SAFETY: per this function's contract.
    let text = |s: *const c_char| (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) });
    let mut message = text(parser.problem).map_or_else(
        || "the YAML parser failed".to_owned(),
        |p| p.to_string_lossy().into_owned(),
    );
    let at = parser.problem_mark;
    let line = (at.line != 0 || at.column != 0).then_some(at.line as usize + 1);
    if line.is_none() && parser.problem_offset != 0 {
        message.push_str(&format!(" at byte {}", parser.problem_offset));
    }
    if let Some(context) = text(parser.context) {
        message.push_str(", ");
        message.push_str(&context.to_string_lossy());
        let within = parser.context_mark;
        if (within.line != 0 || within.column != 0)
            && (within.line, within.column) != (at.line, at.column)
        {
            message.push_str(&format!(
                " at line {} column {}",
                within.line + 1,
                within.column + 1
            ));
        }
    }
    Breach::Syntax { line, message }
}
