//! The per-packet header fields netFound tokenizes, and the one table that says how
//! many 16-bit tokens each field becomes.
//!
//! Everything here is plain data: the capture/decode stages fill a [`PacketFields`],
//! this module turns it into tokens. Values are raw field values, written big-endian in
//! `tokens * 2` bytes and cut into 16-bit words (netFound's `Tokenize.py`); no shift, no
//! special tokens (those are model-side, see [`crate::vocab`]).

use serde::{Deserialize, Serialize};

/// Number of raw TCP option bytes netFound keeps (zero padded) with `--tcp-options`.
pub const TCP_OPTION_BYTES: usize = 40;
/// Number of leading L4 payload bytes netFound keeps (zero padded).
pub const PAYLOAD_BYTES: usize = 12;

/// IP protocol numbers of the three transports netFound tokenizes.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// ICMPv6: laid out like ICMP (type and code).
pub const PROTO_ICMPV6: u8 = 58;

/// Transport-specific fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Fields {
    Tcp {
        /// CWR..FIN as bit7..bit0 (the NS bit is dropped, as in netFound).
        flags: u8,
        window: u16,
        /// Sequence number (absolute as decoded; made relative by the flow stage).
        seq: u32,
        /// Acknowledgement number (absolute as decoded; made relative by the flow stage).
        ack: u32,
        urgent: u16,
        /// Raw option bytes (after the 20-byte header), zero padded to 40.
        options: [u8; TCP_OPTION_BYTES],
    },
    Udp {
        /// The UDP header's length field.
        length: u16,
    },
    /// ICMPv4 (netFound) or ICMPv6 (native mode only).
    Icmp { icmp_type: u8, code: u8 },
}

impl L4Fields {
    /// The IP protocol number this transport is tokenized as.
    pub fn protocol(&self) -> u8 {
        match self {
            L4Fields::Tcp { .. } => PROTO_TCP,
            L4Fields::Udp { .. } => PROTO_UDP,
            L4Fields::Icmp { .. } => PROTO_ICMP,
        }
    }
}

/// The header fields of one packet that become tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketFields {
    /// IP header length in bytes (IHL*4; 40 for IPv6, as netFound writes it).
    pub ip_header_len: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 total length; IPv6 payload length + 40.
    pub total_len: u16,
    /// IPv4 flags as 3 bits (DF = 2, MF = 1); 0 for IPv6.
    pub ip_flags: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    pub l4: L4Fields,
    /// First 12 bytes of the L4 payload, zero padded (for ICMP non-echo: from the type byte).
    pub payload: [u8; PAYLOAD_BYTES],
}

/// Which optional field groups are tokenized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLayout {
    /// Append the 40 raw TCP option bytes as 20 tokens (netFound `--tcp_options`).
    pub tcp_options: bool,
    /// Append the 12 payload bytes as 6 tokens (netFound's default: on).
    pub payload: bool,
}

impl Default for TokenLayout {
    fn default() -> Self {
        TokenLayout {
            tcp_options: false,
            payload: true,
        }
    }
}

/// The field table: (name, tokens) per protocol, in emission order. This is the only
/// place that says how wide each field is.
pub mod table {
    pub const IP: &[(&str, usize)] = &[
        ("IP_hl", 1),
        ("IP_tos", 1),
        ("IP_tl", 1),
        ("IP_Flags", 1),
        ("IP_ttl", 1),
    ];
    pub const TCP: &[(&str, usize)] = &[
        ("TCP_Flags", 1),
        ("TCP_wsize", 1),
        ("TCP_seq", 2),
        ("TCP_ackn", 2),
        ("TCP_urp", 1),
    ];
    pub const TCP_OPTIONS: &[(&str, usize)] = &[("TCP_options", 20)];
    pub const UDP: &[(&str, usize)] = &[("UDP_len", 1)];
    pub const ICMP: &[(&str, usize)] = &[("ICMP_type", 1), ("ICMP_code", 1)];
    pub const PAYLOAD: &[(&str, usize)] = &[("Payload", 6)];

    pub const fn width(fields: &[(&str, usize)]) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < fields.len() {
            n += fields[i].1;
            i += 1;
        }
        n
    }
}

impl TokenLayout {
    /// Tokens per packet of the given IP protocol (18 TCP / 38 with options, 12 UDP, 13 ICMP
    /// and ICMPv6).
    pub fn tokens_per_packet(&self, protocol: u8) -> usize {
        use table::*;
        let l4 = match protocol {
            PROTO_TCP => {
                width(TCP)
                    + if self.tcp_options {
                        width(TCP_OPTIONS)
                    } else {
                        0
                    }
            }
            PROTO_UDP => width(UDP),
            PROTO_ICMP | PROTO_ICMPV6 => width(ICMP),
            _ => 0,
        };
        width(IP) + l4 + if self.payload { width(PAYLOAD) } else { 0 }
    }
}

/// Most tokens one packet can have: TCP with options and payload.
pub const MAX_TOKENS_PER_PACKET: usize = table::width(table::IP)
    + table::width(table::TCP)
    + table::width(table::TCP_OPTIONS)
    + table::width(table::PAYLOAD);

/// Writes tokens into a fixed array from the front.
struct TokenWriter<'a> {
    out: &'a mut [u16; MAX_TOKENS_PER_PACKET],
    len: usize,
}

impl TokenWriter<'_> {
    fn put(&mut self, words: &[u16]) {
        self.out[self.len..self.len + words.len()].copy_from_slice(words);
        self.len += words.len();
    }

    fn put_be_bytes(&mut self, bytes: &[u8]) {
        for w in bytes.chunks_exact(2) {
            self.out[self.len] = u16::from_be_bytes([w[0], w[1]]);
            self.len += 1;
        }
    }
}

impl PacketFields {
    /// Appends this packet's tokens to `out` in netFound's order. TCP seq/ack are taken as
    /// stored: the flow stage makes them relative before calling this.
    pub fn push_tokens(&self, layout: TokenLayout, out: &mut Vec<u16>) {
        let mut tokens = [0; MAX_TOKENS_PER_PACKET];
        let n = self.write_tokens(layout, &mut tokens);
        out.extend_from_slice(&tokens[..n]);
    }

    /// Writes this packet's tokens (as [`push_tokens`](Self::push_tokens) appends them) to
    /// the front of `out`; returns how many.
    pub fn write_tokens(
        &self,
        layout: TokenLayout,
        out: &mut [u16; MAX_TOKENS_PER_PACKET],
    ) -> usize {
        let mut w = TokenWriter { out, len: 0 };
        w.put(&[
            self.ip_header_len as u16,
            self.tos as u16,
            self.total_len,
            self.ip_flags as u16,
            self.ttl as u16,
        ]);
        match &self.l4 {
            L4Fields::Tcp {
                flags,
                window,
                seq,
                ack,
                urgent,
                options,
            } => {
                w.put(&[
                    *flags as u16,
                    *window,
                    (seq >> 16) as u16,
                    *seq as u16,
                    (ack >> 16) as u16,
                    *ack as u16,
                    *urgent,
                ]);
                if layout.tcp_options {
                    w.put_be_bytes(options);
                }
            }
            L4Fields::Udp { length } => w.put(&[*length]),
            L4Fields::Icmp { icmp_type, code } => w.put(&[*icmp_type as u16, *code as u16]),
        }
        if layout.payload {
            w.put_be_bytes(&self.payload);
        }
        w.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // First packet of zeek http/get.pcap (a SYN), whose tokens netFound's golden output gives as
    // [20,0,64,2,64,2,65535,0,0,0,0,0,0,0,0,0,0,0].
    #[test]
    fn syn_matches_golden_tokens() {
        let p = PacketFields {
            ip_header_len: 20,
            tos: 0,
            total_len: 64,
            ip_flags: 2,
            ttl: 64,
            l4: L4Fields::Tcp {
                flags: 2,
                window: 65535,
                seq: 0,
                ack: 0,
                urgent: 0,
                options: [0; 40],
            },
            payload: [0; 12],
        };
        let mut t = Vec::new();
        p.push_tokens(TokenLayout::default(), &mut t);
        assert_eq!(
            t,
            vec![20, 0, 64, 2, 64, 2, 65535, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(t.len(), TokenLayout::default().tokens_per_packet(PROTO_TCP));
    }

    #[test]
    fn widths_match_netfound() {
        let plain = TokenLayout::default();
        let opts = TokenLayout {
            tcp_options: true,
            payload: true,
        };
        assert_eq!(plain.tokens_per_packet(PROTO_TCP), 18);
        assert_eq!(opts.tokens_per_packet(PROTO_TCP), 38);
        assert_eq!(plain.tokens_per_packet(PROTO_UDP), 12);
        assert_eq!(plain.tokens_per_packet(PROTO_ICMP), 13);
        assert_eq!(plain.tokens_per_packet(PROTO_ICMPV6), 13);
    }
}
