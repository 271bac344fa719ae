//! The client's address behind trusted proxies (`serve --trusted-proxy CIDR`), as nginx's
//! realip module does it with `real_ip_recursive on`: when the TCP peer is in a trusted
//! block, the client is the rightmost `X-Forwarded-For` entry that is not, and what the
//! app gets as `X-Forwarded-For` ends with that address (the trusted hops to its right are
//! ours). From any other peer the header proves nothing: the peer is the client, and the
//! chain it sent is only appended to.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::acl::Cidr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client of a request that came from `peer`. When `peer` is trusted, the incoming
/// `X-Forwarded-For` is cut to the entries left of the client, so the router's usual
/// "append the client" makes the chain end with it.
pub(super) fn client(peer: IpAddr, headers: &mut HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let entries = entries(headers);
    let (client, keep) = resolve(peer, &entries, trusted);
    if keep == 0 {
        headers.remove(X_FORWARDED_FOR);
    } else if keep < entries.len() {
        // Entries were read from valid header values, so their join is one too.
        if let Ok(v) = HeaderValue::from_str(&entries[..keep].join(", ")) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// Every `X-Forwarded-For` entry, in order, across repeated headers.
fn entries(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// From a trusted `peer`: the client and how many entries lie left of it. Walks from the
/// right over trusted addresses; the first untrusted one is the client. An entry that is
/// not an address stops the walk: the last trusted address is the client then (nothing
/// further left can be believed). All trusted: the leftmost is the client.
fn resolve(peer: IpAddr, entries: &[String], trusted: &[Cidr]) -> (IpAddr, usize) {
    let mut client = peer;
    let mut keep = entries.len();
    for (i, e) in entries.iter().enumerate().rev() {
        let Some(ip) = parse(e) else {
            break;
        };
        client = ip;
        keep = i;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    (client, keep)
}

/// `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]`, or either with a port.
fn parse(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(inner) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn blocks(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    /// (client, the X-Forwarded-For left for the router to append the client to).
    fn run(peer: &str, xff: &[&str], trusted: &[&str]) -> (IpAddr, Option<String>) {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        let c = client(ip(peer), &mut h, &blocks(trusted));
        let left: Vec<&str> = h
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        (c, (!left.is_empty()).then(|| left.join(", ")))
    }

    #[test]
    fn untrusted_peers_are_the_client_and_their_chain_is_kept() {
        assert_eq!(
            run("198.51.100.9", &["203.0.113.5"], &["10.0.0.0/8"]),
            (ip("198.51.100.9"), Some("203.0.113.5".into()))
        );
        // No trusted proxies at all: nothing is read.
        assert_eq!(
            run("10.0.0.1", &["203.0.113.5"], &[]),
            (ip("10.0.0.1"), Some("203.0.113.5".into()))
        );
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_entry() {
        let t = ["10.0.0.0/8", "192.168.1.1"];
        // A spoofed entry left of the real client stays, the client is the real one.
        assert_eq!(
            run("10.0.0.1", &["1.1.1.1, 203.0.113.5"], &t),
            (ip("203.0.113.5"), Some("1.1.1.1".into()))
        );
        // Trusted hops to the right of the client are skipped, across header lines.
        assert_eq!(
            run(
                "10.0.0.1",
                &["1.1.1.1", "203.0.113.5, 192.168.1.1", "10.9.9.9"],
                &t
            ),
            (ip("203.0.113.5"), Some("1.1.1.1".into()))
        );
        // No header: the peer is the client.
        assert_eq!(run("10.0.0.1", &[], &t), (ip("10.0.0.1"), None));
        // All trusted: the leftmost.
        assert_eq!(
            run("10.0.0.1", &["10.1.1.1, 10.2.2.2"], &t),
            (ip("10.1.1.1"), None)
        );
        // Garbage stops the walk at the last trusted address.
        assert_eq!(
            run("10.0.0.1", &["203.0.113.5, bogus, 10.2.2.2"], &t),
            (ip("10.2.2.2"), Some("203.0.113.5, bogus".into()))
        );
        assert_eq!(
            run("10.0.0.1", &["unknown"], &t),
            (ip("10.0.0.1"), Some("unknown".into()))
        );
        // Ports, brackets and mapped addresses.
        assert_eq!(
            run("::ffff:10.0.0.1", &["203.0.113.5:4711"], &t).0,
            ip("203.0.113.5")
        );
        assert_eq!(run("10.0.0.1", &["[2001:db8::7]"], &t).0, ip("2001:db8::7"));
        assert_eq!(
            run("10.0.0.1", &["[2001:db8::7]:443"], &t).0,
            ip("2001:db8::7")
        );
        assert_eq!(
            run("10.0.0.1", &["::ffff:203.0.113.5"], &t).0,
            ip("203.0.113.5")
        );
    }
}
