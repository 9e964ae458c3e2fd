//! Relative TCP sequence and acknowledgement numbers, exactly as netFound's stage 3
//! (`3_field_extraction`) computes them, in the capture order of a flow's packets.
//!
//! - `abs_seq` = seq of the flow's packet 0; `abs_ack` = ack of packet 0 if non-zero,
//!   else seq of packet 1 (only when packet 0's ack was 0).
//! - The initiator is the source of packet 0, compared as netFound's 32-bit address value
//!   (so IPv6 compares only the first 32 bits).
//! - Initiator packets: `seq - abs_seq`, `ack - abs_ack` (ack is 0 while `abs_ack` is 0);
//!   other packets: `seq - abs_ack`, `ack - abs_seq`. All arithmetic wraps at 2^32.
//!
//! Streaming and O(1): one per TCP flow, fed in the order the flow's packets were captured.

/// Per-flow state of the relative seq/ack rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelativeSeqAck {
    packets: u64,
    initiator: u32,
    abs_seq: u32,
    abs_ack: u32,
}

impl RelativeSeqAck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes one packet's (seq, ack) relative. `src` is the packet's source address as
    /// netFound's 32-bit value (see [`crate::direction::netfound_ip32`]).
    pub fn apply(&mut self, src: u32, seq: u32, ack: u32) -> (u32, u32) {
        match self.packets {
            0 => {
                self.initiator = src;
                self.abs_seq = seq;
                self.abs_ack = ack;
            }
            1 if self.abs_ack == 0 => self.abs_ack = seq,
            _ => {}
        }
        self.packets += 1;
        if src == self.initiator {
            let rel_ack = if self.abs_ack == 0 {
                0
            } else {
                ack.wrapping_sub(self.abs_ack)
            };
            (seq.wrapping_sub(self.abs_seq), rel_ack)
        } else {
            (
                seq.wrapping_sub(self.abs_ack),
                ack.wrapping_sub(self.abs_seq),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u32 = 0x0a00_0001;
    const S: u32 = 0x0a00_0002;

    #[test]
    fn handshake_becomes_zero_based() {
        let mut r = RelativeSeqAck::new();
        assert_eq!(r.apply(C, 1000, 0), (0, 0)); // SYN
        assert_eq!(r.apply(S, 5000, 1001), (0, 1)); // SYN-ACK: abs_ack = 5000
        assert_eq!(r.apply(C, 1001, 5001), (1, 1)); // ACK
        assert_eq!(r.apply(S, 5001, 1101), (1, 101));
    }

    #[test]
    fn mid_stream_start_uses_packet0_ack() {
        let mut r = RelativeSeqAck::new();
        assert_eq!(r.apply(C, 100, 7000), (0, 0));
        assert_eq!(r.apply(S, 7000, 150), (0, 50));
        assert_eq!(r.apply(C, 150, 7010), (50, 10));
    }

    #[test]
    fn wraps_around() {
        let mut r = RelativeSeqAck::new();
        assert_eq!(r.apply(C, u32::MAX, 0), (0, 0));
        assert_eq!(r.apply(S, 3, u32::MAX), (0, 0));
        assert_eq!(r.apply(C, 4, 10), (5, 7));
    }

    #[test]
    fn packet1_from_the_initiator_still_sets_abs_ack() {
        // The README's rule taken literally: packet 1's seq becomes abs_ack whoever sent it.
        let mut r = RelativeSeqAck::new();
        r.apply(C, 10, 0);
        assert_eq!(r.apply(C, 11, 0), (1, 0u32.wrapping_sub(11)));
        assert_eq!(r.apply(C, 12, 99), (2, 88));
    }

    #[test]
    fn abs_ack_zero_forces_initiator_ack_zero() {
        let mut r = RelativeSeqAck::new();
        r.apply(C, 10, 0);
        assert_eq!(r.apply(S, 0, 11), (0, 1)); // packet 1's seq is 0: abs_ack stays 0
        assert_eq!(r.apply(C, 11, 1), (1, 0));
    }
}
