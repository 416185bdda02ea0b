//! Source addresses for outgoing connections: parsing `--source-ips` and binding a socket to
//! one before it connects.
//!
//! One source IP has at most ~28k–64k ephemeral ports towards one destination, so a farm
//! that holds more connections than that spreads them over several source addresses (all of
//! 127.0.0.0/8 is loopback on Linux; on real client boxes, addresses assigned to the NIC).
//!
//! Syntax: a comma-separated list of single IPv4 addresses or inclusive ranges,
//! `127.0.0.2-127.0.0.200,10.0.0.7`. At most [`SOURCE_IPS_MAX`] addresses in all.

use std::net::Ipv4Addr;

/// Most source addresses one farm accepts (a /16 worth).
pub const SOURCE_IPS_MAX: usize = 65_536;

/// Why a `--source-ips` value was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceIpsError {
    /// A piece is not an IPv4 address.
    #[error("not an IPv4 address: {0:?}")]
    BadAddress(String),
    /// A range whose end is below its start.
    #[error("range {start}-{end} ends before it starts")]
    Backwards {
        /// First address of the range.
        start: Ipv4Addr,
        /// Last address of the range.
        end: Ipv4Addr,
    },
    /// The list names more addresses than allowed.
    #[error("{count} source addresses is more than the limit of {max}")]
    TooMany {
        /// Addresses named (counting stopped once over the limit).
        count: usize,
        /// [`SOURCE_IPS_MAX`].
        max: usize,
    },
    /// The list names no address.
    #[error("no source address given")]
    Empty,
}

/// Parses `127.0.0.2-127.0.0.200,10.0.0.7` into the addresses it names, in order.
pub fn parse_source_ips(spec: &str) -> Result<Vec<Ipv4Addr>, SourceIpsError> {
    let mut out = Vec::new();
    for piece in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (start, end) = match piece.split_once('-') {
            Some((a, b)) => (addr(a)?, addr(b)?),
            None => (addr(piece)?, addr(piece)?),
        };
        if end < start {
            return Err(SourceIpsError::Backwards { start, end });
        }
        let count = u32::from(end) as u64 - u32::from(start) as u64 + 1;
        if out.len() as u64 + count > SOURCE_IPS_MAX as u64 {
            return Err(SourceIpsError::TooMany {
                count: (out.len() as u64 + count).min(usize::MAX as u64) as usize,
                max: SOURCE_IPS_MAX,
            });
        }
        out.extend((u32::from(start)..=u32::from(end)).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        return Err(SourceIpsError::Empty);
    }
    Ok(out)
}

fn addr(s: &str) -> Result<Ipv4Addr, SourceIpsError> {
    s.trim()
        .parse()
        .map_err(|_| SourceIpsError::BadAddress(s.trim().to_owned()))
}

/// The source address for the `n`th connection: round-robin over `ips`, `None` when empty
/// (let the kernel choose).
pub fn pick(ips: &[Ipv4Addr], n: u64) -> Option<Ipv4Addr> {
    if ips.is_empty() {
        return None;
    }
    Some(ips[(n % ips.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_singles_in_order() {
        let ips = parse_source_ips("127.0.0.2-127.0.0.4, 10.0.0.7").unwrap();
        let want: Vec<Ipv4Addr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "10.0.0.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        assert_eq!(parse_source_ips("127.0.0.9").unwrap().len(), 1);
    }

    #[test]
    fn ranges_cross_octets() {
        let ips = parse_source_ips("127.0.0.250-127.0.1.5").unwrap();
        assert_eq!(ips.len(), 12);
        assert_eq!(ips[6], Ipv4Addr::new(127, 0, 1, 0));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            parse_source_ips("127.0.0.300"),
            Err(SourceIpsError::BadAddress(_))
        ));
        assert!(matches!(
            parse_source_ips("127.0.0.5-127.0.0.2"),
            Err(SourceIpsError::Backwards { .. })
        ));
        assert_eq!(parse_source_ips(" , "), Err(SourceIpsError::Empty));
        assert!(matches!(
            parse_source_ips("10.0.0.0-10.255.255.255"),
            Err(SourceIpsError::TooMany {
                max: SOURCE_IPS_MAX,
                ..
            })
        ));
        assert!(matches!(
            parse_source_ips("::1"),
            Err(SourceIpsError::BadAddress(_))
        ));
    }

    #[test]
    fn pick_round_robins() {
        let ips = parse_source_ips("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(pick(&ips, 0), Some(ips[0]));
        assert_eq!(pick(&ips, 4), Some(ips[1]));
        assert_eq!(pick(&[], 4), None);
    }
}
