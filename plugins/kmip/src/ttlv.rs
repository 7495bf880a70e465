//! KMIP's TTLV encoding (Tag, Type, Length, Value), the same in KMIP 1.x
//! and 2.x: a 3-byte tag, a 1-byte type, a 4-byte big-endian length, then
//! the value padded to a multiple of 8 bytes.
//!
//! The decoder reads untrusted server bytes: every length is checked
//! against what remains before anything is allocated, nesting and item
//! counts are capped, and padding must be zero. It never panics (a
//! fuzz-style test below feeds it random and mutated messages).

/// Deepest nesting of structures accepted.
pub const MAX_DEPTH: usize = 16;
/// Most items accepted in one message.
pub const MAX_ITEMS: usize = 4096;

/// A TTLV value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// A structure: its items in order.
    Structure(Vec<Item>),
    /// A 32-bit signed integer.
    Integer(i32),
    /// A 64-bit signed integer.
    LongInteger(i64),
    /// A big integer (two's complement, big-endian, padded).
    BigInteger(Vec<u8>),
    /// An enumeration value.
    Enumeration(u32),
    /// A boolean.
    Boolean(bool),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the Unix epoch (KMIP 2.0).
    DateTimeExtended(i64),
}

impl std::fmt::Debug for Value {
    /// Byte strings can be keys: only their length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Bytes(b) => write!(f, "Bytes(len {})", b.len()),
            Value::BigInteger(b) => write!(f, "BigInteger(len {})", b.len()),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::Text(v) => write!(f, "Text({v:?})"),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
            Value::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

/// A tagged value.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    /// The tag (`0x42xxxx` for standard tags).
    pub tag: u32,
    /// The value.
    pub value: Value,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#08x}: {:?}", self.tag, self.value)
    }
}

/// Why bytes are not a TTLV item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed KMIP message: {}", self.0)
    }
}

impl Item {
    /// An item.
    pub fn new(tag: u32, value: Value) -> Item {
        Item { tag, value }
    }

    /// A structure item.
    pub fn structure(tag: u32, items: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(items))
    }

    /// The items of a structure (empty for other values).
    pub fn items(&self) -> &[Item] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.items().iter().find(|i| i.tag == tag)
    }

    /// Every child with `tag`.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.items().iter().filter(move |i| i.tag == tag)
    }

    /// The encoded bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        let (ty, body): (u8, Vec<u8>) = match &self.value {
            Value::Structure(items) => {
                let mut b = Vec::new();
                for i in items {
                    i.encode_into(&mut b);
                }
                (0x01, b)
            }
            Value::Integer(v) => (0x02, v.to_be_bytes().to_vec()),
            Value::LongInteger(v) => (0x03, v.to_be_bytes().to_vec()),
            Value::BigInteger(v) => (0x04, v.clone()),
            Value::Enumeration(v) => (0x05, v.to_be_bytes().to_vec()),
            Value::Boolean(v) => (0x06, u64::from(*v).to_be_bytes().to_vec()),
            Value::Text(v) => (0x07, v.as_bytes().to_vec()),
            Value::Bytes(v) => (0x08, v.clone()),
            Value::DateTime(v) => (0x09, v.to_be_bytes().to_vec()),
            Value::Interval(v) => (0x0A, v.to_be_bytes().to_vec()),
            Value::DateTimeExtended(v) => (0x0B, v.to_be_bytes().to_vec()),
        };
        out.push(ty);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len() + padding(body.len()), 0);
    }
}

fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Reads one whole message: exactly one item, filling `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Item, DecodeError> {
    let mut budget = MAX_ITEMS;
    let (item, used) = decode_at(bytes, 0, &mut budget)?;
    if used != bytes.len() {
        return Err(DecodeError(format!(
            "{} bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(item)
}

/// The length of the message whose 8-byte header is `head` (for reading
/// it off a stream): its tag must be `tag` and its type a structure.
pub fn message_length(head: &[u8; 8], tag: u32, max: u32) -> Result<u32, DecodeError> {
    let got = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    if got != tag || head[3] != 0x01 {
        return Err(DecodeError(format!(
            "expected a structure with tag {tag:#08x}, got tag {got:#08x} type {:#04x}",
            head[3]
        )));
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if len > max || !len.is_multiple_of(8) {
        return Err(DecodeError(format!(
            "message length {len} (must be a multiple of 8, at most {max})"
        )));
    }
    Ok(len)
}

fn decode_at(b: &[u8], depth: usize, budget: &mut usize) -> Result<(Item, usize), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError(format!("nested deeper than {MAX_DEPTH}")));
    }
    if *budget == 0 {
        return Err(DecodeError(format!("more than {MAX_ITEMS} items")));
    }
    *budget -= 1;
    let head = b
        .get(..8)
        .ok_or_else(|| DecodeError(format!("truncated header ({} bytes)", b.len())))?;
    let tag = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let ty = head[3];
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let padded = len
        .checked_add(padding(len))
        .filter(|p| *p <= b.len() - 8)
        .ok_or_else(|| DecodeError(format!("tag {tag:#08x}: length {len} passes the end")))?;
    let body = &b[8..8 + len];
    if b[8 + len..8 + padded].iter().any(|&x| x != 0) {
        return Err(DecodeError(format!("tag {tag:#08x}: padding is not zero")));
    }
    let fixed = |n: usize| -> Result<&[u8], DecodeError> {
        if len == n {
            Ok(body)
        } else {
            Err(DecodeError(format!(
                "tag {tag:#08x}: type {ty:#04x} needs length {n}, not {len}"
            )))
        }
    };
    let value = match ty {
        0x01 => {
            let mut items = Vec::new();
            let mut at = 0;
            while at < len {
                let (item, used) = decode_at(&body[at..], depth + 1, budget)?;
                items.push(item);
                at += used;
            }
            Value::Structure(items)
        }
        0x02 => Value::Integer(i32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default())),
        0x03 => Value::LongInteger(i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())),
        0x04 if len.is_multiple_of(8) => Value::BigInteger(body.to_vec()),
        0x05 => Value::Enumeration(u32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default())),
        0x06 => match u64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default()) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            v => return Err(DecodeError(format!("tag {tag:#08x}: boolean {v}"))),
        },
        0x07 => Value::Text(
            String::from_utf8(body.to_vec())
                .map_err(|_| DecodeError(format!("tag {tag:#08x}: text is not UTF-8")))?,
        ),
        0x08 => Value::Bytes(body.to_vec()),
        0x09 => Value::DateTime(i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())),
        0x0A => Value::Interval(u32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default())),
        0x0B => {
            Value::DateTimeExtended(i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default()))
        }
        _ => {
            return Err(DecodeError(format!(
                "tag {tag:#08x}: unknown type {ty:#04x}"
            )));
        }
    };
    Ok((Item { tag, value }, 8 + padded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Item {
        Item::structure(
            0x42007B,
            vec![
                Item::structure(
                    0x42007A,
                    vec![
                        Item::new(0x42006A, Value::Integer(1)),
                        Item::new(0x420092, Value::DateTime(1_700_000_000)),
                        Item::new(0x42000D, Value::Integer(1)),
                    ],
                ),
                Item::new(0x420094, Value::Text("uid-7".into())),
                Item::new(0x4200C2, Value::Bytes(vec![1, 2, 3])),
                Item::new(0x42005C, Value::Enumeration(0x1F)),
                Item::new(0x420008, Value::Boolean(true)),
                Item::new(0x420001, Value::LongInteger(-5)),
                Item::new(0x420002, Value::BigInteger(vec![0; 8])),
                Item::new(0x420003, Value::Interval(9)),
                Item::new(0x420004, Value::DateTimeExtended(7)),
            ],
        )
    }

    /// The KMIP specification's own test vector (1.x test cases, section
    /// 9.1.2): an Integer 8 under tag 0x420020.
    #[test]
    fn encodes_like_the_specification() {
        let b = Item::new(0x420020, Value::Integer(8)).encode();
        assert_eq!(
            b,
            [0x42, 0x00, 0x20, 0x02, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0]
        );
        let t = Item::new(0x420020, Value::Text("Hello World".into())).encode();
        assert_eq!(&t[..8], &[0x42, 0x00, 0x20, 0x07, 0, 0, 0, 0x0B]);
        assert_eq!(t.len(), 8 + 16);
    }

    #[test]
    fn round_trips_every_type() {
        let item = sample();
        let bytes = item.encode();
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(decode(&bytes).unwrap(), item);
        let head: [u8; 8] = bytes[..8].try_into().unwrap();
        assert_eq!(
            message_length(&head, 0x42007B, 1 << 20).unwrap() as usize,
            bytes.len() - 8
        );
        assert!(message_length(&head, 0x420078, 1 << 20).is_err());
        assert!(message_length(&head, 0x42007B, 8).is_err());
    }

    #[test]
    fn hostile_shapes_are_refused() {
        let bytes = sample().encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (bytes[..bytes.len() - 1].to_vec(), "passes the end"),
            ([bytes.clone(), vec![0; 8]].concat(), "after the message"),
            (
                vec![0x42, 0, 1, 0x02, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
                "needs length 4",
            ),
            (vec![0x42, 0, 1, 0x0C, 0, 0, 0, 0], "unknown type"),
            (
                vec![0x42, 0, 1, 0x07, 0, 0, 0, 1, 0xFF, 0, 0, 0, 0, 0, 0, 0],
                "not UTF-8",
            ),
            (
                vec![0x42, 0, 1, 0x08, 0, 0, 0, 1, 7, 1, 0, 0, 0, 0, 0, 0],
                "padding",
            ),
            (
                vec![0x42, 0, 1, 0x08, 0xFF, 0xFF, 0xFF, 0xF8],
                "passes the end",
            ),
            (
                vec![0x42, 0, 1, 0x06, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2],
                "boolean",
            ),
        ];
        for (b, want) in cases {
            let e = decode(&b).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Deep nesting: refused at MAX_DEPTH, without recursing further.
        let mut deep = Item::new(0x420001, Value::Integer(0));
        for _ in 0..MAX_DEPTH + 2 {
            deep = Item::structure(0x420001, vec![deep]);
        }
        assert!(decode(&deep.encode()).unwrap_err().0.contains("deeper"));
        // Many items: refused at MAX_ITEMS.
        let wide = Item::structure(
            0x420001,
            vec![Item::new(0x420002, Value::Integer(1)); MAX_ITEMS + 1],
        );
        assert!(decode(&wide.encode()).unwrap_err().0.contains("items"));
    }

    /// A small deterministic generator (xorshift64*), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Random bytes and mutations of a valid message (bit flips, changed
    /// lengths and types, truncation, splices) never panic, and never
    /// allocate more than the input: a decoded value is never longer than
    /// the bytes it came from.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let valid = sample().encode();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..100_000 {
            let mut b = if round % 4 == 0 {
                let n = rng.below(96);
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                valid.clone()
            };
            for _ in 0..1 + rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let at = rng.below(b.len());
                match rng.below(5) {
                    0 => b[at] ^= 1 << rng.below(8),
                    1 => b[at] = rng.next() as u8,
                    2 => b.truncate(at),
                    3 => {
                        // A length field: somewhere plausible or huge.
                        let at = at - at % 8 + 4;
                        if at + 4 <= b.len() {
                            let v = if rng.below(2) == 0 {
                                rng.next() as u32
                            } else {
                                rng.below(64) as u32
                            };
                            b[at..at + 4].copy_from_slice(&v.to_be_bytes());
                        }
                    }
                    _ => {
                        let from = rng.below(b.len());
                        let chunk: Vec<u8> = b[from..].iter().take(16).copied().collect();
                        b.splice(at..at, chunk);
                    }
                }
            }
            if let Ok(item) = decode(&b) {
                assert!(item.encode().len() <= b.len() + 8, "round {round}");
            }
        }
    }
}
