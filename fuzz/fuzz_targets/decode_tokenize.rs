//! Arbitrary bytes as a capture file: capture reader -> decode -> tokens. Also feeds the
//! bytes straight to the decoder under every supported link type. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfm::capture::CaptureReader;
use netfm::decode::{decode, decode_frame, DecodedPacket};
use netfm_tokenizer::TokenLayout;

const LAYOUT: TokenLayout = TokenLayout {
    tcp_options: true,
    payload: true,
};
const LINKTYPES: [u32; 9] = [0, 1, 101, 108, 113, 228, 229, 276, 147];

fn tokenize(p: &DecodedPacket, tokens: &mut Vec<u16>) {
    tokens.clear();
    p.fields.push_tokens(LAYOUT, tokens);
    assert_eq!(
        tokens.len(),
        LAYOUT.tokens_per_packet(p.fields.l4.protocol())
    );
}

fuzz_target!(|data: &[u8]| {
    let mut tokens = Vec::with_capacity(64);
    // Small buffers so that growth, refill and the size cap are exercised too.
    if let Ok(mut reader) = CaptureReader::from_reader_with_buffer(
        "fuzz",
        Box::new(std::io::Cursor::new(data.to_vec())),
        256,
        1 << 16,
    ) {
        while let Some(frame) = reader.next_frame() {
            assert!(frame.data.len() <= data.len().max(1 << 16));
            if let Ok(p) = decode_frame(&frame) {
                tokenize(&p, &mut tokens);
            }
        }
    }
    for lt in LINKTYPES {
        if let Ok(p) = decode(lt, data, 0, data.len() as u32) {
            tokenize(&p, &mut tokens);
        }
    }
});
