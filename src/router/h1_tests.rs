//! The wire format against real byte shapes, fed whole and a byte at a time.

use super::*;

/// Parses one head off `buf` (which must hold a whole one).
fn head(buf: &mut BytesMut, method: &Method) -> ResponseHead {
    parse_response_head(buf, method)
        .expect("a valid head")
        .expect("a whole head")
}

/// Everything the decoder yields for `framing` from `wire` fed in pieces of `step` bytes,
/// with EOF after the last when `close`; and what is left in the buffer.
fn body(
    framing: Framing,
    wire: &[u8],
    step: usize,
    close: bool,
) -> io::Result<(Vec<u8>, BytesMut)> {
    let mut d = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match d.decode(&mut buf)? {
            Decoded::Data(b) => out.extend_from_slice(&b),
            Decoded::End => return Ok((out, buf)),
            Decoded::More if fed < wire.len() => {
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            Decoded::More if close => d.eof()?,
            Decoded::More => panic!("the decoder wants more than the wire has"),
        }
    }
}

#[test]
fn request_heads_are_written_as_http11_with_chunked_when_asked() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("web.example.test"));
    h.append("x-a", HeaderValue::from_static("1"));
    h.append("x-a", HeaderValue::from_static("2"));
    let mut out = Vec::new();
    encode_request_head(&Method::POST, "/up?x=1", &h, Sending::Chunked, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /up?x=1 HTTP/1.1\r\nhost: web.example.test\r\nx-a: 1\r\nx-a: 2\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    let mut out = Vec::new();
    encode_chunk(b"hello world, 17 b", &mut out);
    encode_chunk(b"", &mut out);
    out.extend_from_slice(LAST_CHUNK);
    assert_eq!(&out[..], b"11\r\nhello world, 17 b\r\n0\r\n\r\n");
}

#[test]
fn a_length_response_whole_and_split_across_reads() {
    let wire = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 12\r\nX-Multi: a\r\nx-multi: b\r\n\r\nhello world\n";
    // The head a byte at a time: partial until the blank line.
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        if let Some(h) = parse_response_head(&mut buf, &Method::GET).unwrap() {
            assert_eq!(i + 1, wire.len() - 12);
            assert_eq!(h.status, StatusCode::OK);
            assert_eq!(h.framing, Framing::Length(12));
            assert!(h.keep_alive);
            assert_eq!(h.headers["server"], "t");
            let multi: Vec<_> = h.headers.get_all("x-multi").iter().collect();
            assert_eq!(multi, ["a", "b"]);
            break;
        }
    }
    assert!(buf.is_empty());
    for step in [1, 5, 100] {
        let (data, rest) =
            body(Framing::Length(12), &wire[wire.len() - 12..], step, false).unwrap();
        assert_eq!(&data[..], b"hello world\n");
        assert!(rest.is_empty());
    }
}

#[test]
fn chunked_with_extensions_and_trailers_split_anywhere() {
    let wire: &[u8] = b"5;name=value;q=\"x\"\r\nhello\r\n1 ; ext\r\n \r\nA\r\n0123456789\r\n0;last\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\nHTTP/1.1";
    for step in 1..=wire.len() {
        let (data, rest) = body(Framing::Chunked, wire, step, false).unwrap();
        assert_eq!(&data[..], b"hello 0123456789", "step {step}");
        // The next response's bytes stay for the connection (a read may have brought them).
        assert!(b"HTTP/1.1".starts_with(&rest), "step {step}: {rest:?}");
    }
    // Bare LF line ends are taken too.
    let (data, _) = body(Framing::Chunked, b"3\nabc\n0\n\n", 1, false).unwrap();
    assert_eq!(&data[..], b"abc");
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for bad in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"ffffffffffffffffff\r\n",
        b"5x\r\nhello\r\n",
        b"-5\r\nhello\r\n",
    ] {
        assert!(body(Framing::Chunked, bad, 3, true).is_err(), "{bad:?}");
    }
    // Cut short: the close comes mid-body.
    let cut = body(Framing::Chunked, b"5\r\nhel", 2, true).unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
    let cut = body(Framing::Length(10), b"hello", 2, true).unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
    // A chunk-size line that never ends.
    assert!(body(Framing::Chunked, &[b'1'; 5000], 100, true).is_err());
}

#[test]
fn pipelined_responses_come_apart_at_their_bounds() {
    let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none\
                 HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
                 HTTP/1.1 204 No Content\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthree";
    let mut buf = BytesMut::from(&wire[..]);
    let mut bodies = Vec::new();
    while !buf.is_empty() {
        let h = head(&mut buf, &Method::GET);
        let mut d = Decoder::new(h.framing);
        let mut got = Vec::new();
        while let Decoded::Data(b) = d.decode(&mut buf).unwrap() {
            got.extend_from_slice(&b);
        }
        assert!(d.is_done());
        bodies.push((h.status.as_u16(), String::from_utf8(got).unwrap()));
    }
    assert_eq!(
        bodies,
        [
            (200, "one".to_string()),
            (200, "two".into()),
            (204, "".into()),
            (200, "three".into())
        ]
    );
}

#[test]
fn a_response_without_length_runs_until_the_close_and_is_not_reused() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"[..]);
    let h = head(&mut buf, &Method::GET);
    assert_eq!(h.framing, Framing::UntilClose);
    assert!(!h.keep_alive);
    let (data, _) = body(h.framing, b"all of it, however long", 4, true).unwrap();
    assert_eq!(&data[..], b"all of it, however long");
    // Not chunked as the last coding: until the close too.
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"[..]);
    assert_eq!(head(&mut buf, &Method::GET).framing, Framing::UntilClose);
}

#[test]
fn no_body_for_head_1xx_204_and_304_whatever_the_length_says() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"[..]);
    let h = head(&mut buf, &Method::HEAD);
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.keep_alive);
    assert_eq!(h.headers[header::CONTENT_LENGTH], "1234");
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\ncontent-length: 99\r\n\r\nHTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n"[..],
    );
    assert_eq!(head(&mut buf, &Method::GET).framing, Framing::Empty);
    assert_eq!(head(&mut buf, &Method::GET).framing, Framing::Empty);
    assert!(buf.is_empty());
    assert_eq!(
        Decoder::new(Framing::Empty).decode(&mut buf).unwrap(),
        Decoded::End
    );
}

#[test]
fn continue_then_the_final_answer() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
    );
    let interim = head(&mut buf, &Method::POST);
    assert_eq!(interim.status, StatusCode::CONTINUE);
    assert_eq!(interim.framing, Framing::Empty);
    let last = head(&mut buf, &Method::POST);
    assert_eq!(last.status, StatusCode::OK);
    assert_eq!(last.framing, Framing::Length(2));
    assert_eq!(&buf[..], b"ok");
}

#[test]
fn connection_close_http10_and_bad_lengths() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\n"[..]);
    assert!(!head(&mut buf, &Method::GET).keep_alive);
    let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"[..]);
    assert!(!head(&mut buf, &Method::GET).keep_alive);
    let mut buf = BytesMut::from(
        &b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n"[..],
    );
    assert!(head(&mut buf, &Method::GET).keep_alive);
    // The same length twice is one length; two different ones are refused.
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n"[..]);
    assert_eq!(head(&mut buf, &Method::GET).framing, Framing::Length(3));
    for bad in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
        b"HTTP/1.1 99 Odd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(bad);
        assert!(
            parse_response_head(&mut buf, &Method::GET).is_err(),
            "{bad:?}"
        );
    }
    // A head that never ends is refused past the bound.
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
    buf.extend_from_slice(&vec![b'x'; MAX_HEAD]);
    assert!(parse_response_head(&mut buf, &Method::GET).is_err());
}
