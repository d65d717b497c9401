//! A purpose-built pickle reader (protocols 0-5) and writer (protocol 3).
//!
//! Why not serde-pickle: it cannot write globals (so a Python reader could
//! never raise our exceptions), drops class names on read, and its memo
//! handling loses objects shared by reference (`arq-vectors/PROTOCOL.md` §11).
//!
//! The reader keeps every object it builds in an arena and lets the memo and
//! the stack hold arena ids, so a container memoized while still empty and
//! filled afterwards (what `pickle.dumps` always emits) is seen filled
//! wherever it is referenced. The tree is materialised at STOP; a container
//! that contains itself is reported as [`Error::Recursive`].
//!
//! The writer emits protocol 3 with no memo: every Python 3 reader accepts
//! it, and values are trees, so nothing is shared.

use num_bigint::{BigInt, Sign};
use num_traits::ToPrimitive;

use super::value::Value;

/// Deepest nesting the reader materialises; deeper input is rejected rather
/// than risking the stack.
const MAX_DEPTH: usize = 256;

/// Why a pickle could not be read or written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The input ended inside an opcode or before STOP.
    #[error("pickle truncated")]
    Incomplete,
    /// An opcode this reader does not implement.
    #[error("unsupported pickle opcode 0x{0:02x}")]
    Opcode(u8),
    /// An opcode needed more stack items, or a MARK, than there were.
    #[error("pickle stack underflow")]
    Underflow,
    /// GET of a memo slot never PUT.
    #[error("pickle memo slot {0} missing")]
    Memo(u64),
    /// A structure that refers to itself, or nesting beyond [`MAX_DEPTH`].
    #[error("pickle structure is recursive or too deep")]
    Recursive,
    /// Anything else malformed: bad UTF-8, a REDUCE of a non-class, ...
    #[error("malformed pickle: {0}")]
    Malformed(&'static str),
}

type Result<T, E = Error> = std::result::Result<T, E>;

// === reader ===

type Id = usize;

#[derive(Debug, Clone)]
enum Node {
    Leaf(Value),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    Global(String),
    Object {
        class: String,
        args: Vec<Id>,
        state: Option<Id>,
    },
}

#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Item(Id),
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, Id>,
}

/// Reads one pickle.
///
/// # Errors
/// [`Error`] says why the bytes are not a pickle this reader understands.
pub fn decode(input: &[u8]) -> Result<Value> {
    let mut r = Reader {
        input,
        pos: 0,
        arena: Vec::new(),
        stack: Vec::new(),
        memo: Default::default(),
    };
    let root = r.run()?;
    r.materialise(root, 0)
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Incomplete)?;
        let s = self.input.get(self.pos..end).ok_or(Error::Incomplete)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().map_err(|_| Error::Incomplete)?,
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| Error::Incomplete)?,
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| Error::Incomplete)?,
        ))
    }

    fn len(&mut self, n: u64) -> Result<usize> {
        usize::try_from(n).map_err(|_| Error::Malformed("length too large"))
    }

    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = self.input.get(self.pos..).ok_or(Error::Incomplete)?;
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Error::Incomplete)?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }

    fn utf8(bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed("invalid UTF-8"))
    }

    fn push_node(&mut self, node: Node) {
        self.arena.push(node);
        self.stack.push(Slot::Item(self.arena.len() - 1));
    }

    fn push(&mut self, v: Value) {
        self.push_node(Node::Leaf(v));
    }

    fn pop(&mut self) -> Result<Id> {
        match self.stack.pop() {
            Some(Slot::Item(id)) => Ok(id),
            _ => Err(Error::Underflow),
        }
    }

    fn top(&self) -> Result<Id> {
        match self.stack.last() {
            Some(Slot::Item(id)) => Ok(*id),
            _ => Err(Error::Underflow),
        }
    }

    /// Pops everything down to and including the topmost MARK.
    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or(Error::Underflow)?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Item(id) => id,
                Slot::Mark => unreachable!("rposition found the topmost mark"),
            })
            .collect())
    }

    fn memo_get(&mut self, key: u64) -> Result<()> {
        let id = *self.memo.get(&key).ok_or(Error::Memo(key))?;
        self.stack.push(Slot::Item(id));
        Ok(())
    }

    fn memo_put(&mut self, key: u64) -> Result<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn extend_list(&mut self, list: Id, items: Vec<Id>) -> Result<()> {
        match &mut self.arena[list] {
            Node::List(v) | Node::Set(v) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(Error::Malformed("APPENDS on a non-list")),
        }
    }

    fn set_items(&mut self, dict: Id, items: Vec<Id>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(Error::Malformed("odd number of SETITEMS"));
        }
        let Node::Dict(d) = &mut self.arena[dict] else {
            return Err(Error::Malformed("SETITEM on a non-dict"));
        };
        for pair in items.chunks(2) {
            d.push((pair[0], pair[1]));
        }
        Ok(())
    }

    fn global_name(&self, module: Id, name: Id) -> Result<String> {
        match (&self.arena[module], &self.arena[name]) {
            (Node::Leaf(Value::Str(m)), Node::Leaf(Value::Str(n))) => Ok(format!("{m}.{n}")),
            _ => Err(Error::Malformed("STACK_GLOBAL needs two strings")),
        }
    }

    fn tuple_items(&self, id: Id) -> Result<Vec<Id>> {
        match &self.arena[id] {
            Node::Tuple(items) => Ok(items.clone()),
            _ => Err(Error::Malformed("expected a tuple of arguments")),
        }
    }

    fn instantiate(&mut self, callable: Id, args: Vec<Id>) -> Result<()> {
        let class = match &self.arena[callable] {
            Node::Global(name) => name.clone(),
            _ => return Err(Error::Malformed("REDUCE of a non-global")),
        };
        self.push_node(Node::Object {
            class,
            args,
            state: None,
        });
        Ok(())
    }

    fn run(&mut self) -> Result<Id> {
        loop {
            let op = self.byte()?;
            match op {
                // PROTO
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return Err(Error::Malformed("pickle protocol above 5"));
                    }
                }
                // FRAME: the frame length is only a read-ahead hint.
                0x95 => {
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack.pop().ok_or(Error::Underflow)?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(Slot::Item(top));
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                // INT (text): protocol 0 also spells booleans this way.
                b'I' => {
                    let line = self.line()?;
                    let v = match line {
                        b"01" => Value::Bool(true),
                        b"00" => Value::Bool(false),
                        _ => parse_int(line)?,
                    };
                    self.push(v);
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)));
                }
                // LONG (text), with a trailing 'L'.
                b'L' => {
                    let line = self.line()?;
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    let v = parse_int(digits)?;
                    self.push(v);
                }
                0x8a => {
                    let n = usize::from(self.byte()?);
                    let bytes = self.take(n)?;
                    self.push(long_from_le(bytes));
                }
                0x8b => {
                    let n = self.u32()? as i32;
                    let n = usize::try_from(n).map_err(|_| Error::Malformed("negative LONG4"))?;
                    let bytes = self.take(n)?;
                    self.push(long_from_le(bytes));
                }
                b'F' => {
                    let line = self.line()?;
                    let f = std::str::from_utf8(line)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or(Error::Malformed("bad FLOAT"))?;
                    self.push(Value::Float(f));
                }
                b'G' => {
                    let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| Error::Incomplete)?;
                    self.push(Value::Float(f64::from_be_bytes(b)));
                }
                // Python 2 str: decoded as Python 3 does by default (ASCII,
                // here latin-1 so no byte is lost).
                b'S' => {
                    let line = self.line()?;
                    let s = unquote(line)?;
                    self.push(Value::Str(s));
                }
                b'T' => {
                    let n = self.u32()? as i32;
                    let n = usize::try_from(n).map_err(|_| Error::Malformed("negative length"))?;
                    let b = self.take(n)?;
                    self.push(Value::Str(b.iter().map(|&c| char::from(c)).collect()));
                }
                b'U' => {
                    let n = usize::from(self.byte()?);
                    let b = self.take(n)?;
                    self.push(Value::Str(b.iter().map(|&c| char::from(c)).collect()));
                }
                b'V' => {
                    let line = self.line()?;
                    let s = raw_unicode_escape(line)?;
                    self.push(Value::Str(s));
                }
                b'X' => {
                    let n = self.u32()?;
                    let n = self.len(u64::from(n))?;
                    let s = Self::utf8(self.take(n)?)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let n = usize::from(self.byte()?);
                    let s = Self::utf8(self.take(n)?)?;
                    self.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let s = Self::utf8(self.take(n)?)?;
                    self.push(Value::Str(s));
                }
                b'B' => {
                    let n = self.u32()?;
                    let n = self.len(u64::from(n))?;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = usize::from(self.byte()?);
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b']' => self.push_node(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?;
                }
                b')' => self.push_node(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(Error::Underflow);
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_node(Node::Tuple(items));
                }
                b'}' => self.push_node(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Dict(Vec::new()));
                    let dict = self.top()?;
                    self.set_items(dict, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, items)?;
                }
                0x8f => self.push_node(Node::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark()?;
                    let set = self.top()?;
                    self.extend_list(set, items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Set(items));
                }
                b'c' => {
                    let module = Self::utf8(self.line()?)?;
                    let name = Self::utf8(self.line()?)?;
                    self.push_node(Node::Global(format!("{}.{name}", fix_module(&module))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let g = self.global_name(module, name)?;
                    self.push_node(Node::Global(g));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = self.tuple_items(args)?;
                    self.instantiate(callable, args)?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = self.tuple_items(args)?;
                    self.instantiate(cls, args)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = self.tuple_items(args)?;
                    self.instantiate(cls, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    match &mut self.arena[obj] {
                        Node::Object { state: s, .. } => *s = Some(state),
                        _ => return Err(Error::Malformed("BUILD on a non-object")),
                    }
                }
                b'p' => {
                    let line = self.line()?;
                    let key = parse_u64(line)?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = u64::from(self.byte()?);
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = u64::from(self.u32()?);
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let key = parse_u64(line)?;
                    self.memo_get(key)?;
                }
                b'h' => {
                    let key = u64::from(self.byte()?);
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = u64::from(self.u32()?);
                    self.memo_get(key)?;
                }
                other => return Err(Error::Opcode(other)),
            }
        }
    }

    fn materialise(&self, id: Id, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::Recursive);
        }
        let many = |ids: &[Id]| -> Result<Vec<Value>> {
            ids.iter()
                .map(|&i| self.materialise(i, depth + 1))
                .collect()
        };
        Ok(match &self.arena[id] {
            Node::Leaf(v) => v.clone(),
            Node::List(items) => Value::List(many(items)?),
            Node::Tuple(items) => Value::Tuple(many(items)?),
            Node::Set(items) => Value::Set(many(items)?),
            Node::Dict(pairs) => Value::Dict(
                pairs
                    .iter()
                    .map(|&(k, v)| {
                        Ok((
                            self.materialise(k, depth + 1)?,
                            self.materialise(v, depth + 1)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Node::Global(name) => Value::Global(name.clone()),
            Node::Object { class, args, state } => Value::Object {
                class: class.clone(),
                args: many(args)?,
                state: match state {
                    Some(s) => Some(Box::new(self.materialise(*s, depth + 1)?)),
                    None => None,
                },
            },
        })
    }
}

/// Python 2 module names that protocol 0-2 pickles use, as Python 3 maps them.
fn fix_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "exceptions" => "builtins",
        other => other,
    }
}

fn parse_u64(line: &[u8]) -> Result<u64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(Error::Malformed("bad memo key"))
}

fn parse_int(text: &[u8]) -> Result<Value> {
    let s = std::str::from_utf8(text).map_err(|_| Error::Malformed("bad INT"))?;
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    s.parse::<BigInt>()
        .map(Value::BigInt)
        .map_err(|_| Error::Malformed("bad INT"))
}

/// Two's-complement little-endian integer (LONG1 / LONG4).
fn long_from_le(bytes: &[u8]) -> Value {
    let big = BigInt::from_signed_bytes_le(bytes);
    match big.to_i64() {
        Some(i) => Value::Int(i),
        None => Value::BigInt(big),
    }
}

/// The argument of protocol 0 STRING: a Python string literal in quotes.
fn unquote(line: &[u8]) -> Result<String> {
    let inner = match line {
        [q, rest @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => rest,
        _ => return Err(Error::Malformed("STRING not quoted")),
    };
    let mut out = String::new();
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c == b'\\' && i + 1 < inner.len() {
            i += 1;
            match inner[i] {
                b'n' => out.push('\n'),
                b't' => out.push('\t'),
                b'r' => out.push('\r'),
                b'\\' => out.push('\\'),
                b'\'' => out.push('\''),
                b'"' => out.push('"'),
                b'x' => {
                    let hex = inner.get(i + 1..i + 3).ok_or(Error::Malformed("bad \\x"))?;
                    let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
                        .map_err(|_| Error::Malformed("bad \\x"))?;
                    out.push(char::from(v));
                    i += 2;
                }
                other => {
                    out.push('\\');
                    out.push(char::from(other));
                }
            }
        } else {
            out.push(char::from(c));
        }
        i += 1;
    }
    Ok(out)
}

/// Protocol 0 UNICODE: raw-unicode-escape (`\uXXXX`, `\UXXXXXXXX`, bytes as latin-1).
fn raw_unicode_escape(line: &[u8]) -> Result<String> {
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' && i + 1 < line.len() && (line[i + 1] == b'u' || line[i + 1] == b'U') {
            let n = if line[i + 1] == b'u' { 4 } else { 8 };
            let hex = line
                .get(i + 2..i + 2 + n)
                .ok_or(Error::Malformed("bad \\u"))?;
            let code = u32::from_str_radix(
                std::str::from_utf8(hex).map_err(|_| Error::Malformed("bad \\u"))?,
                16,
            )
            .map_err(|_| Error::Malformed("bad \\u"))?;
            out.push(char::from_u32(code).ok_or(Error::Malformed("bad \\u"))?);
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Ok(out)
}

// === writer ===

/// Writes `value` as a protocol 3 pickle.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 3];
    write(&mut out, value);
    out.push(b'.');
    out
}

fn write(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::None => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Int(i) => write_int(out, *i),
        Value::BigInt(b) => write_long(out, b),
        Value::Float(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => {
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            if b.len() < 256 {
                out.push(b'C');
                out.push(b.len() as u8);
            } else {
                out.push(b'B');
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(b);
        }
        Value::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                items.iter().for_each(|i| write(out, i));
                out.push(b'e');
            }
        }
        Value::Tuple(items) => write_tuple(out, items),
        Value::Dict(pairs) => {
            out.push(b'}');
            if !pairs.is_empty() {
                out.push(b'(');
                for (k, v) in pairs {
                    write(out, k);
                    write(out, v);
                }
                out.push(b'u');
            }
        }
        // Protocol 3 has no set opcodes: call builtins.set(list).
        Value::Set(items) => {
            write_global(out, "builtins.set");
            write_tuple(out, &[Value::List(items.clone())]);
            out.push(b'R');
        }
        Value::Object { class, args, state } => {
            write_global(out, class);
            write_tuple(out, args);
            out.push(b'R');
            if let Some(state) = state {
                write(out, state);
                out.push(b'b');
            }
        }
        Value::Global(name) => write_global(out, name),
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if (0..256).contains(&i) {
        out.push(b'K');
        out.push(i as u8);
    } else if (0..65536).contains(&i) {
        out.push(b'M');
        out.extend_from_slice(&(i as u16).to_le_bytes());
    } else if let Ok(small) = i32::try_from(i) {
        out.push(b'J');
        out.extend_from_slice(&small.to_le_bytes());
    } else {
        write_long(out, &BigInt::from(i));
    }
}

fn write_long(out: &mut Vec<u8>, b: &BigInt) {
    let bytes = if b.sign() == Sign::NoSign {
        Vec::new()
    } else {
        b.to_signed_bytes_le()
    };
    if bytes.len() < 256 {
        out.push(0x8a);
        out.push(bytes.len() as u8);
    } else {
        out.push(0x8b);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&bytes);
}

fn write_tuple(out: &mut Vec<u8>, items: &[Value]) {
    match items.len() {
        0 => out.push(b')'),
        1..=3 => {
            items.iter().for_each(|i| write(out, i));
            out.push(0x84 + items.len() as u8);
        }
        _ => {
            out.push(b'(');
            items.iter().for_each(|i| write(out, i));
            out.push(b't');
        }
    }
}

/// GLOBAL opcode: `module\nname\n`, split at the last dot
/// (`asyncio.exceptions.CancelledError` -> `asyncio.exceptions`, `CancelledError`).
fn write_global(out: &mut Vec<u8>, dotted: &str) {
    let (module, name) = dotted.rsplit_once('.').unwrap_or(("builtins", dotted));
    out.push(b'c');
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nested_values_through_the_writer_and_reader() {
        let v = Value::Dict(vec![
            (
                Value::str("a"),
                Value::Tuple(vec![Value::Int(1), Value::Int(-70000)]),
            ),
            (
                Value::Int(3),
                Value::List(vec![Value::None, Value::Bool(true)]),
            ),
            (Value::str("big"), Value::BigInt(BigInt::from(2).pow(70))),
            (Value::str("neg"), Value::Int(i64::MIN)),
            (Value::str("b"), Value::Bytes(vec![0, 255, 7])),
            (Value::str("f"), Value::Float(-0.25)),
            (
                Value::str("e"),
                Value::exception("builtins.ValueError", "boom"),
            ),
            (Value::str("s"), Value::Set(vec![Value::Int(1)])),
        ]);
        let back = decode(&encode(&v)).unwrap();
        // Sets are written as builtins.set(list) and come back as that call.
        let Value::Dict(mut pairs) = back else {
            panic!("not a dict")
        };
        let set = pairs.pop().unwrap();
        assert_eq!(
            set.1,
            Value::Object {
                class: "builtins.set".into(),
                args: vec![Value::List(vec![Value::Int(1)])],
                state: None
            }
        );
        let Value::Dict(mut expected) = v else {
            unreachable!()
        };
        expected.pop();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn a_memoized_list_filled_after_memoization_is_seen_filled_where_shared() {
        // x = [1]; pickle.dumps((x, x), protocol=4)
        let bytes = [
            0x80, 4, 0x95, 11, 0, 0, 0, 0, 0, 0, 0, b']', 0x94, b'K', 1, b'a', b'h', 0, 0x86, 0x94,
            b'.',
        ];
        let v = decode(&bytes).unwrap();
        let one = Value::List(vec![Value::Int(1)]);
        assert_eq!(v, Value::Tuple(vec![one.clone(), one]));
    }

    #[test]
    fn a_list_that_contains_itself_is_reported_as_recursive() {
        // x = []; x.append(x); pickle.dumps(x, protocol=2)
        let bytes = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
        assert_eq!(decode(&bytes), Err(Error::Recursive));
    }

    #[test]
    fn truncated_input_is_incomplete_and_garbage_is_an_unknown_opcode() {
        assert_eq!(decode(&[0x80, 4, 0x8c, 5, b'a']), Err(Error::Incomplete));
        assert_eq!(decode(b""), Err(Error::Incomplete));
        assert_eq!(decode(&[0xff]), Err(Error::Opcode(0xff)));
        assert_eq!(decode(b"e."), Err(Error::Underflow));
    }

    #[test]
    fn protocol_zero_text_opcodes_are_read() {
        // pickle.dumps({'a': (1, 2**70, 'x\u00e9', 1.5, True)}, protocol=0)
        let text =
            b"(dp0\nVa\np1\n(I1\nL1180591620717411303424L\nVx\\u00e9\np2\nF1.5\nI01\ntp3\ns.";
        let v = decode(text).unwrap();
        assert_eq!(
            v.get("a").unwrap(),
            &Value::Tuple(vec![
                Value::Int(1),
                Value::BigInt(BigInt::from(2).pow(70)),
                Value::str("xé"),
                Value::Float(1.5),
                Value::Bool(true),
            ])
        );
    }

    #[test]
    fn integers_take_the_smallest_opcode_and_keep_their_sign() {
        for i in [
            0,
            255,
            256,
            65535,
            65536,
            -1,
            i64::from(i32::MIN),
            i64::from(i32::MAX) + 1,
            i64::MAX,
        ] {
            assert_eq!(
                decode(&encode(&Value::Int(i))).unwrap(),
                Value::Int(i),
                "{i}"
            );
        }
    }
}
