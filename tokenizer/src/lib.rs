//! netfm-tokenizer: header fields to netFound's 16-bit tokens, burst and flow layout, the
//! direction rules, relative TCP sequence numbers, and the model-side vocabulary.
//!
//! Pure: no IO, no async, no clocks. The application (`netfm`) decodes packets and groups
//! them into flows; this crate says what a flow's tokens are.

pub mod burst;
pub mod direction;
pub mod fields;
pub mod hint;
pub mod relative_seq;
pub mod vocab;

pub use burst::{Burst, BurstConfig, FlowTokenizer, TokenizedFlow};
pub use direction::{Cidr, CidrError, DirectionError, InternalNetworks, NetfoundDirection};
pub use fields::{L4Fields, PacketFields, TokenLayout, PAYLOAD_BYTES, TCP_OPTION_BYTES};
pub use relative_seq::RelativeSeqAck;
