//! The HTTP/1.1 wire format of the router's upstream side (RFC 9112): the request head
//! written, the response head parsed (`httparse`, as hyper does), and how long the response
//! body is (`Content-Length`, chunked, until the connection closes, or none at all), with a
//! decoder that takes the body out of the bytes read so far however they were split.

use std::io;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};

/// Largest response head accepted; past it the upstream is taken to be broken.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with its extensions) and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// How the request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sending {
    None,
    /// As `Content-Length` said.
    Length,
    Chunked,
}

/// Writes the request head: the origin-form target, HTTP/1.1, the headers as they are, and
/// `Transfer-Encoding: chunked` when the body goes chunked.
pub(super) fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    sending: Sending,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if sending == Sending::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One chunk of a chunked request body.
pub(super) fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked request body.
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the response body is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (a HEAD request, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A response head off the wire.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once this response is read.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`, taking it out of `buf` when complete
/// (None: more bytes are needed). The header values share the head's bytes, not copies.
pub(super) fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> io::Result<Option<ResponseHead>> {
    // Neither the header slots nor the places of the fields are initialised first: the
    // parse fills what it uses (zeroing them was a good part of a response's cost).
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(invalid("upstream response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid("malformed upstream response head")),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0))
        .map_err(|_| invalid("invalid upstream status"))?;
    let http10 = res.version == Some(0);
    // Where each name and value sits in the head (it is at most `MAX_HEAD` long), so the
    // values can share its bytes once it is split off.
    let base = buf.as_ptr() as usize;
    let mut at = [MaybeUninit::<[u32; 4]>::uninit(); MAX_HEADERS];
    let fields = res.headers.len();
    for (slot, h) in at.iter_mut().zip(res.headers.iter()) {
        let name = (h.name.as_ptr() as usize - base) as u32;
        let value = (h.value.as_ptr() as usize - base) as u32;
        slot.write([
            name,
            name + h.name.len() as u32,
            value,
            value + h.value.len() as u32,
        ]);
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields);
    for slot in &at[..fields] {
        // SAFETY: the loop above wrote the first `fields` slots.
        let [ns, ne, vs, ve] = unsafe { slot.assume_init() }.map(|n| n as usize);
        let name =
            HeaderName::from_bytes(&head[ns..ne]).map_err(|_| invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| invalid("invalid header value"))?;
        headers.append(name, value);
    }
    let framing = framing(&headers, status, method)?;
    let keep_alive = keeps_alive(&headers, http10) && framing != Framing::UntilClose;
    Ok(Some(ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Whether `Connection` lets the connection be reused (HTTP/1.0 only with `keep-alive`).
fn keeps_alive(headers: &HeaderMap, http10: bool) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("close").split(',').map(str::trim) {
            close |= token.eq_ignore_ascii_case("close");
            keep |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    !close && (!http10 || keep)
}

fn framing(headers: &HeaderMap, status: StatusCode, method: &Method) -> io::Result<Framing> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked must be the last coding; anything else runs until the connection closes.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v
            .to_str()
            .map_err(|_| invalid("invalid content-length"))?
            .split(',')
        {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| invalid("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// What the decoder found in the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Data(Bytes),
    /// The body is over.
    End,
    /// More bytes are needed.
    More,
}

/// Takes a response body out of the connection's read buffer.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    UntilClose,
    /// A chunk-size line is next.
    ChunkSize,
    /// Bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields, up to the empty line (bytes of them seen so far).
    Trailers(usize),
    Done,
}

impl Decoder {
    pub(super) fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of body still to come, when known.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body out of `buf` (what is left in `buf` after the body's end
    /// belongs to the connection).
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(n) | State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = n.min(buf.len() as u64);
                    let left = n - take;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take as usize).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    let Some(line) = take_line(buf, 2)? else {
                        return Ok(Decoded::More);
                    };
                    if !line.is_empty() {
                        return Err(invalid("malformed chunked body"));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS - seen)? else {
                        return Ok(Decoded::More);
                    };
                    // Trailer fields are dropped: they would only reach a client that
                    // asked for them with `TE: trailers`, a hop-by-hop header.
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }

    /// The connection reached its end: fine only for a body that runs until then.
    pub(super) fn eof(&mut self) -> io::Result<()> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed the connection mid-body",
            )),
        }
    }
}

/// A line (without its CRLF, or a bare LF) out of `buf`, if a whole one is there; an error
/// past `max` bytes without one.
fn take_line(buf: &mut BytesMut, max: usize) -> io::Result<Option<BytesMut>> {
    let Some(end) = buf
        .iter()
        .take(max.saturating_add(1))
        .position(|&b| b == b'\n')
    else {
        if buf.len() > max {
            return Err(invalid("malformed chunked body"));
        }
        return Ok(None);
    };
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

/// A chunk-size line's size: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(invalid("malformed chunk size"));
    }
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if !rest_ok {
        return Err(invalid("malformed chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
    u64::from_str_radix(text, 16).map_err(|_| invalid("malformed chunk size"))
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
