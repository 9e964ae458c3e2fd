//! Arbitrary bytes as a capture file: capture reader -> decode -> tokens -> both flow
//! stages (native table with a tiny flow bound, netFound mode) -> tokenized flows. Also
//! feeds the bytes straight to the decoder under every supported link type. Any panic is a
//! bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netfm::capture::CaptureReader;
use netfm::decode::{decode, decode_frame, DecodeOptions, DecodedPacket};
use netfm::flow::native::{NativeFlowConfig, NativeFlowTable};
use netfm::flow::netfound::NetfoundAssembler;
use netfm::flow::FlowAssembler;
use netfm_tokenizer::{BurstConfig, InternalNetworks, TokenLayout};

const LAYOUT: TokenLayout = TokenLayout {
    tcp_options: true,
    payload: true,
};
const LINKTYPES: [u32; 12] = [0, 1, 9, 50, 101, 104, 108, 113, 228, 229, 276, 147];

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
    let bursts = BurstConfig { layout: LAYOUT, ..BurstConfig::default() };
    let mut native = NativeFlowTable::new(NativeFlowConfig { max_flows: 4, bursts, ..NativeFlowConfig::default() });
    let mut netfound = NetfoundAssembler::new(bursts, InternalNetworks::netfound_default());
    let mut flows = Vec::new();
    // Small buffers so that growth, refill and the size cap are exercised too.
    if let Ok(mut reader) = CaptureReader::from_reader_with_buffer(
        "fuzz",
        Box::new(std::io::Cursor::new(data.to_vec())),
        256,
        1 << 16,
    ) {
        while let Some(frame) = reader.next_frame() {
            assert!(frame.data.len() <= data.len().max(1 << 16));
            if let Ok(p) = decode_frame(&frame, &DecodeOptions::INNER) {
                tokenize(&p, &mut tokens);
                native.push(&p, &mut flows);
                netfound.push(&p, &mut flows);
            }
        }
    }
    native.end_of_file(&mut flows);
    netfound.end_of_file(&mut flows);
    for f in &flows {
        assert!(f.tokens.bursts.len() <= bursts.max_bursts);
        let per_packet = LAYOUT.tokens_per_packet(f.tokens.protocol);
        for (b, t) in f.tokens.bursts_with_tokens() {
            assert!(b.count as usize <= bursts.max_packets_per_burst);
            assert_eq!(t.len(), b.count as usize * per_packet);
        }
        let lens: usize = f.tokens.bursts.iter().map(|b| b.token_len as usize).sum();
        assert_eq!(lens, f.tokens.tokens.len());
    }
    for lt in LINKTYPES {
        for opts in [DecodeOptions::INNER, DecodeOptions::NETFOUND] {
            if let Ok(p) = decode(lt, data, 0, data.len() as u32, &opts) {
                tokenize(&p, &mut tokens);
            }
        }
    }
});
