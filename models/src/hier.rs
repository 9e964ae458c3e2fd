//! The netFound-style hierarchical encoder and its heads, written once against
//! [`ParamStore`] so that the same definition yields inference, train-step and eval graphs.
//!
//! Shapes: `B` flows (symbolic `batch`), `N` bursts per flow, `L` tokens per burst (the first
//! is the burst's CLS token), `H` hidden. The batch comes in one of two layouts
//! ([`InputLayout`]): dense, a `[B, N, L]` grid; or packed, the `K` present bursts of the
//! batch end to end in `[R, L]` rows ([`PackedInputs`]), so that the token work (the
//! projections, the feed-forward layers, the attention inside bursts) is done on real tokens
//! instead of padding. Per-burst values (heads, targets) are `[B, N]` dense and `[K]` packed.
//!
//! - Input embedding: token embedding, projected, plus the projections of a protocol
//!   embedding and of an MLP over the burst metadata (direction, ln(1+bytes), ln(1+packets),
//!   ln(1+iat ms)), plus learned positions within the burst and burst positions, then
//!   LayerNorm. Projecting the concatenation `[token; protocol; metadata]` with one matrix is
//!   the same as summing the three blocks' projections, which is what is computed (the
//!   per-burst terms then cost one row per burst instead of one per token).
//! - Each layer (pre-LayerNorm): self-attention inside each burst over its `L` tokens, then
//!   self-attention across the bursts' CLS tokens, whose outputs are written back into the CLS
//!   slots. Padding tokens and absent bursts are masked out of attention.
//! - Heads on the final burst CLS vectors: swapped-burst detection, direction prediction,
//!   burst-metadata regression; masked-token prediction on selected token positions (decoder
//!   tied to the token embedding); flow classification on the mean of the present bursts.

use crate::config::{InputLayout, ModelConfig, META_FEATURES, META_TARGETS, PROTOCOL_VOCAB};
use crate::graph::{DType, Dim, Graph, V};
use crate::params::{Init, ParamSpec, ParamStore};

/// Labels that cross-entropy ignores.
pub const IGNORE_INDEX: i64 = -100;
/// Additive attention mask value for absent keys.
const MASKED: f64 = -1e9;
/// Standard deviation of initial weights (BERT's).
const INIT_STD: f64 = 0.02;

/// The batch inputs every graph takes, in one of the two layouts ([`InputLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum BatchInputs {
    Dense(DenseInputs),
    Packed(PackedInputs),
}

/// The dense layout's inputs: `B` flows, `N` bursts per flow, `L` slots per burst.
#[derive(Clone, Copy, Debug)]
pub struct DenseInputs {
    /// int64 `[B, N, L]` model ids (netfm-tokenizer's vocabulary; 0 = padding); slot 0 of a
    /// present burst is CLS, an absent burst is all padding.
    pub input_ids: V,
    /// int64 `[B]` IP protocol numbers.
    pub protocol: V,
    /// float `[B, N, 4]` burst metadata features.
    pub burst_meta: V,
}

/// The packed layout's inputs: `B` flows with `K` present bursts in all, packed into `R`
/// rows of `L` slots; `N` is the batch's most bursts in one flow.
///
/// Each burst occupies consecutive slots of one row, CLS first; a row may hold several
/// bursts and ends in padding. Bursts are numbered `0..K` in the order of `burst_meta`'s
/// rows.
#[derive(Clone, Copy, Debug)]
pub struct PackedInputs {
    /// int64 `[R, L]` model ids; 0 = padding.
    pub input_ids: V,
    /// int64 `[R, L]` each slot's position inside its burst (0 = CLS); 0 on padding.
    pub token_pos: V,
    /// int64 `[R, L]` the burst each slot belongs to (padding: any burst of the same row).
    /// Attention stays inside a burst, and the burst's terms are added to its slots.
    pub token_burst: V,
    /// float `[K, 4]` burst metadata features.
    pub burst_meta: V,
    /// int64 `[K]` the flat slot `row·L + pos` of each burst's CLS token.
    pub burst_cls: V,
    /// int64 `[K]` the flow (`0..B`) of each burst.
    pub burst_flow: V,
    /// int64 `[K]` each burst's position in its flow (`0..N`).
    pub burst_pos: V,
    /// int64 `[B, N]` the bursts of each flow in order; −1 past the flow's last burst.
    pub flow_bursts: V,
    /// int64 `[B]` IP protocol numbers.
    pub protocol: V,
}

impl BatchInputs {
    pub fn declare(g: &mut Graph, cfg: &ModelConfig) -> BatchInputs {
        let f = g.float;
        let i = DType::I64;
        let b = Dim::sym("batch");
        match cfg.layout {
            InputLayout::Dense => {
                let (n, l) = (Dim::sym("bursts"), Dim::sym("tokens"));
                BatchInputs::Dense(DenseInputs {
                    input_ids: g.input("input_ids", i, vec![b.clone(), n.clone(), l]),
                    protocol: g.input("protocol", i, vec![b.clone()]),
                    burst_meta: g.input("burst_meta", f, vec![b, n, (META_FEATURES as i64).into()]),
                })
            }
            InputLayout::Packed => {
                let (r, l) = (Dim::sym("rows"), Dim::sym("row_len"));
                let (k, n) = (Dim::sym("bursts"), Dim::sym("flow_bursts"));
                let rl = vec![r, l];
                BatchInputs::Packed(PackedInputs {
                    input_ids: g.input("input_ids", i, rl.clone()),
                    token_pos: g.input("token_pos", i, rl.clone()),
                    token_burst: g.input("token_burst", i, rl),
                    burst_meta: g.input(
                        "burst_meta",
                        f,
                        vec![k.clone(), (META_FEATURES as i64).into()],
                    ),
                    burst_cls: g.input("burst_cls", i, vec![k.clone()]),
                    burst_flow: g.input("burst_flow", i, vec![k.clone()]),
                    burst_pos: g.input("burst_pos", i, vec![k]),
                    flow_bursts: g.input("flow_bursts", i, vec![b.clone(), n]),
                    protocol: g.input("protocol", i, vec![b]),
                })
            }
        }
    }

    /// The shape of a per-burst value (a target, a head output) in this layout, without
    /// the trailing feature axis: `[batch, bursts]` dense, `[bursts]` packed.
    pub fn burst_dims(&self) -> Vec<Dim> {
        match self {
            BatchInputs::Dense(_) => vec![Dim::sym("batch"), Dim::sym("bursts")],
            BatchInputs::Packed(_) => vec![Dim::sym("bursts")],
        }
    }
}

impl From<i64> for Dim {
    fn from(n: i64) -> Self {
        Dim::fixed(n)
    }
}

/// What the encoder produces.
#[derive(Clone, Copy, Debug)]
pub struct Encoded {
    /// Final token states: `[B, N, L, H]` dense, `[R, L, H]` packed.
    pub tokens: V,
    /// Final burst CLS states: `[B, N, H]` dense, `[K, H]` packed.
    pub bursts: V,
    /// `[B, H]` mean of the present bursts' states: the flow embedding.
    pub flow: V,
    /// 1 for present bursts, 0 for padding bursts, in the shape of `bursts` without `H`
    /// (all ones when packed: only present bursts are there).
    pub burst_present: V,
}

/// The per-burst and per-flow head outputs (per-burst: `[B, N]` dense, `[K]` packed).
#[derive(Clone, Copy, Debug)]
pub struct HeadOutputs {
    /// Per burst: the logit that the burst was swapped in from another flow.
    pub swap_logits: V,
    /// Per burst: the logit that the burst goes in the forward direction.
    pub direction_logits: V,
    /// Per burst, `[.., 3]`: predicted ln(1+bytes), ln(1+packets), ln(1+iat ms).
    pub meta_pred: V,
    /// `[B, C]` flow class logits when the config has classes.
    pub class_logits: Option<V>,
}

/// Builds the model into a graph, asking `store` for each parameter.
pub struct Model<'a, S: ParamStore> {
    pub cfg: &'a ModelConfig,
    pub store: &'a mut S,
}

impl<S: ParamStore> Model<'_, S> {
    fn param(&mut self, g: &mut Graph, name: &str, dims: &[usize], init: Init) -> V {
        if let Some(v) = g.by_name(name) {
            return v; // shared (the token embedding is also the MLM decoder)
        }
        let decay = dims.len() >= 2 && !matches!(init, Init::Ones | Init::Zeros);
        let spec = ParamSpec {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            init,
            decay,
        };
        self.store.param(g, spec)
    }

    /// `x @ W + b` with `W: [in, out]`.
    fn linear(&mut self, g: &mut Graph, x: V, name: &str, inp: usize, out: usize) -> V {
        let w = self.param(g, &format!("{name}.w"), &[inp, out], Init::Normal(INIT_STD));
        let b = self.param(g, &format!("{name}.b"), &[out], Init::Zeros);
        let y = g.matmul(x, w);
        g.add(y, b)
    }

    fn layer_norm(&mut self, g: &mut Graph, x: V, name: &str) -> V {
        let h = self.cfg.hidden;
        let gamma = self.param(g, &format!("{name}.gamma"), &[h], Init::Ones);
        let beta = self.param(g, &format!("{name}.beta"), &[h], Init::Zeros);
        g.layer_norm(x, gamma, beta, self.cfg.layer_norm_eps)
    }

    /// Multi-head self-attention over the second-to-last axis of `x: [..., S, H]`, with an
    /// additive `mask` that broadcasts to `[..., heads, S, S]`.
    fn attention(&mut self, g: &mut Graph, x: V, mask: V, name: &str) -> V {
        let (h, nh, dh) = (
            self.cfg.hidden,
            self.cfg.heads as i64,
            self.cfg.head_dim() as i64,
        );
        let r = g.rank(x);
        let q = self.linear(g, x, &format!("{name}.q"), h, h);
        let k = self.linear(g, x, &format!("{name}.k"), h, h);
        let v = self.linear(g, x, &format!("{name}.v"), h, h);
        let mut split = vec![0i64; r - 1];
        split.extend([nh, dh]);
        // [..., S, nh, dh] -> [..., nh, S, dh]  (and [..., nh, dh, S] for keys).
        let lead: Vec<i64> = (0..r as i64 - 2).collect();
        let (s_ax, h_ax, d_ax) = (r as i64 - 2, r as i64 - 1, r as i64);
        let heads_first: Vec<i64> = lead.iter().copied().chain([h_ax, s_ax, d_ax]).collect();
        let keys_t: Vec<i64> = lead.iter().copied().chain([h_ax, d_ax, s_ax]).collect();
        let q = g.reshape(q, &split);
        let q = g.transpose(q, &heads_first);
        let q = g.mul_scalar(q, 1.0 / (dh as f64).sqrt());
        let k = g.reshape(k, &split);
        let kt = g.transpose(k, &keys_t);
        let v = g.reshape(v, &split);
        let v = g.transpose(v, &heads_first);
        let scores = g.matmul(q, kt);
        let scores = g.add(scores, mask);
        let p = g.softmax(scores, -1);
        let ctx = g.matmul(p, v);
        let ctx = g.transpose(ctx, &heads_first);
        let mut merge = vec![0i64; r - 1];
        merge.push(h as i64);
        let ctx = g.reshape(ctx, &merge);
        self.linear(g, ctx, &format!("{name}.o"), h, h)
    }

    /// Pre-LayerNorm transformer block.
    fn block(&mut self, g: &mut Graph, x: V, mask: V, name: &str) -> V {
        let (h, ffn) = (self.cfg.hidden, self.cfg.ffn);
        let n1 = self.layer_norm(g, x, &format!("{name}.ln1"));
        let a = self.attention(g, n1, mask, &format!("{name}.attn"));
        let x = g.add(x, a);
        let n2 = self.layer_norm(g, x, &format!("{name}.ln2"));
        let f = self.linear(g, n2, &format!("{name}.ffn1"), h, ffn);
        let f = g.gelu(f);
        let f = self.linear(g, f, &format!("{name}.ffn2"), ffn, h);
        g.add(x, f)
    }

    /// The encoder, in the layout of `inp`.
    pub fn encode(&mut self, g: &mut Graph, inp: &BatchInputs) -> Encoded {
        match inp {
            BatchInputs::Dense(d) => self.encode_dense(g, d),
            BatchInputs::Packed(p) => self.encode_packed(g, p),
        }
    }

    /// The input embedding's parts, in one order for both layouts (the parameters are
    /// registered in it): the projected token embedding of `ids`, the projected protocol
    /// embedding of `protocol: [B]` → `[B, H]`, and the metadata MLP's projection of
    /// `meta: [..., 4]` → `[..., H]`.
    fn embed_parts(&mut self, g: &mut Graph, ids: V, protocol: V, meta: V) -> (V, V, V) {
        let h = self.cfg.hidden;
        let vocab = self.cfg.vocab.size as usize;
        let tok_table = self.param(g, "embed.token", &[vocab, h], Init::Normal(INIT_STD));
        let tok = g.gather(tok_table, ids);
        let tok = self.linear(g, tok, "embed.proj_token", h, h);
        let proto_table = self.param(
            g,
            "embed.protocol",
            &[PROTOCOL_VOCAB, h],
            Init::Normal(INIT_STD),
        );
        let proto = g.gather(proto_table, protocol); // [B,H]
        let w_proto = self.param(g, "embed.proj_protocol.w", &[h, h], Init::Normal(INIT_STD));
        let proto = g.matmul(proto, w_proto);
        let meta = self.linear(g, meta, "embed.meta1", META_FEATURES, h);
        let meta = g.gelu(meta);
        let meta = self.linear(g, meta, "embed.meta2", h, h);
        let w_meta = self.param(g, "embed.proj_meta.w", &[h, h], Init::Normal(INIT_STD));
        let meta = g.matmul(meta, w_meta);
        (tok, proto, meta)
    }

    /// The position tables: within a burst (`[burst_len, H]`) and of bursts in a flow
    /// (`[max_bursts, H]`).
    fn position_tables(&mut self, g: &mut Graph) -> (V, V) {
        let (h, n, l) = (self.cfg.hidden, self.cfg.max_bursts, self.cfg.burst_len);
        let pos = self.param(g, "embed.position", &[l, h], Init::Normal(INIT_STD));
        let bpos = self.param(g, "embed.burst_position", &[n, h], Init::Normal(INIT_STD));
        (pos, bpos)
    }

    /// Mean of `bursts: [B, N, H]` over the present ones (`present: [B, N]`).
    fn flow_mean(&mut self, g: &mut Graph, bursts: V, present: V) -> V {
        let one = g.scalar(1.0);
        let w = g.unsqueeze(present, &[2]); // [B,N,1]
        let weighted = g.mul(bursts, w);
        let sum = g.reduce_sum(weighted, &[1], false); // [B,H]
        let count = g.reduce_sum(present, &[1], true); // [B,1]
        let count = g.max(count, one);
        g.div(sum, count)
    }

    fn encode_dense(&mut self, g: &mut Graph, inp: &DenseInputs) -> Encoded {
        let cfg = self.cfg.clone();
        let hi = cfg.hidden as i64;
        // The batch's bursts (N ≤ max_bursts) and tokens per burst (L ≤ burst_len) are
        // runtime sizes: a batch of short flows costs what its tokens cost.
        let token_pos = g.arange_of_axis(inp.input_ids, 2); // [L]
        let burst_pos = g.arange_of_axis(inp.input_ids, 1); // [N]
        let first = g.scalar_of(DType::I64, 0.0);
        let is_first = g.equal(token_pos, first);

        // Masks from the ids: padding tokens, and bursts whose CLS slot is padding.
        let pad = g.scalar_of(DType::I64, cfg.vocab.pad as f64);
        let is_pad = g.equal(inp.input_ids, pad);
        let zero = g.scalar(0.0);
        let neg = g.scalar(MASKED);
        let tok_mask = g.where_(is_pad, neg, zero); // [B,N,L]
        let tok_mask = g.unsqueeze(tok_mask, &[2, 3]); // [B,N,1,1,L]
        let cls_ids = g.slice(inp.input_ids, 2, 0, 1);
        let cls_ids = g.squeeze(cls_ids, &[2]); // [B,N]
        let burst_absent = g.equal(cls_ids, pad);
        let one = g.scalar(1.0);
        let is_cls = g.where_(is_first, one, zero);
        let is_cls = g.unsqueeze(is_cls, &[1]); // [L,1]: 1 at the CLS slot
        let burst_present = g.where_(burst_absent, zero, one); // [B,N]
        let flow_mask = g.where_(burst_absent, neg, zero);
        let flow_mask = g.unsqueeze(flow_mask, &[1, 2]); // [B,1,1,N]

        // Input embedding.
        let (tok, proto, meta) = self.embed_parts(g, inp.input_ids, inp.protocol, inp.burst_meta);
        let proto = g.reshape(proto, &[0, 1, 1, hi]); // [B,1,1,H]
        let per_burst = g.unsqueeze(meta, &[2]); // [B,N,1,H]
        let per_burst = g.add(per_burst, proto);
        let (pos_table, bpos_table) = self.position_tables(g);
        let pos = g.gather(pos_table, token_pos); // [L,H]
        let bpos = g.gather(bpos_table, burst_pos);
        let bpos = g.unsqueeze(bpos, &[1]); // [N,1,H]
        let x = g.add(tok, per_burst);
        let x = g.add(x, pos);
        let x = g.add(x, bpos);
        let mut x = self.layer_norm(g, x, "embed.ln");

        for layer in 0..cfg.layers {
            // Inside each burst.
            x = self.block(g, x, tok_mask, &format!("layer{layer}.burst"));
            // Across the bursts' CLS tokens, written back into the CLS slots.
            let cls = select_cls(g, x, is_cls); // [B,N,H]
            let updated = self.block(g, cls, flow_mask, &format!("layer{layer}.flow"));
            let delta = g.sub(updated, cls);
            let delta = g.unsqueeze(delta, &[2]); // [B,N,1,H]
            let delta = g.mul(delta, is_cls); // [B,N,L,H], zero off the CLS slots
            x = g.add(x, delta);
        }
        let tokens = self.layer_norm(g, x, "final_ln");
        let bursts = select_cls(g, tokens, is_cls);
        let flow = self.flow_mean(g, bursts, burst_present);
        Encoded {
            tokens,
            bursts,
            flow,
            burst_present,
        }
    }

    /// The packed layout (see [`PackedInputs`]): token work on `[R, L, H]`, the per-burst
    /// terms on `[K, H]`, the cross-burst attention on the flows' CLS states gathered into
    /// `[B, N, H]`. Same function of the same parameters as the dense layout.
    fn encode_packed(&mut self, g: &mut Graph, p: &PackedInputs) -> Encoded {
        let cfg = self.cfg.clone();
        let hi = cfg.hidden as i64;
        let zero = g.scalar(0.0);
        let one = g.scalar(1.0);
        let neg = g.scalar(MASKED);
        let zero_i = g.scalar_of(DType::I64, 0.0);

        // Attention inside a burst: a key is seen from a query of the same burst, unless
        // it is padding.
        let q_burst = g.unsqueeze(p.token_burst, &[2]); // [R,L,1]
        let k_burst = g.unsqueeze(p.token_burst, &[1]); // [R,1,L]
        let same = g.equal(q_burst, k_burst); // [R,L,L]
        let other = g.where_(same, zero, neg);
        let pad = g.scalar_of(DType::I64, cfg.vocab.pad as f64);
        let is_pad = g.equal(p.input_ids, pad);
        let key_pad = g.where_(is_pad, neg, zero);
        let key_pad = g.unsqueeze(key_pad, &[1]); // [R,1,L]
        let tok_mask = g.add(other, key_pad);
        let tok_mask = g.unsqueeze(tok_mask, &[1]); // [R,1,L,L]
                                                    // The CLS slots (CLS ids occur nowhere else: corruptions draw field tokens).
        let cls_id = g.scalar_of(DType::I64, cfg.vocab.cls as f64);
        let is_cls = g.equal(p.input_ids, cls_id);
        let is_cls = g.where_(is_cls, one, zero);
        let is_cls = g.unsqueeze(is_cls, &[2]); // [R,L,1]
                                                // The flows' burst grid.
        let absent = g.less(p.flow_bursts, zero_i); // [B,N]
        let grid_idx = g.where_(absent, zero_i, p.flow_bursts);
        let flow_mask = g.where_(absent, neg, zero);
        let flow_mask = g.unsqueeze(flow_mask, &[1, 2]); // [B,1,1,N]
        let present = g.where_(absent, zero, one); // [B,N]
                                                   // Each burst's cell `flow·N + pos` in the flattened grid.
        let grid_shape = g.shape_of(p.flow_bursts);
        let n_cells = g.slice(grid_shape, 0, 1, 2); // [1]: N
        let cell = g.mul(p.burst_flow, n_cells);
        let cell = g.add(cell, p.burst_pos); // [K]

        // Input embedding.
        let (tok, proto, meta) = self.embed_parts(g, p.input_ids, p.protocol, p.burst_meta);
        let proto = g.gather(proto, p.burst_flow); // [K,H]
        let (pos_table, bpos_table) = self.position_tables(g);
        let bpos = g.gather(bpos_table, p.burst_pos); // [K,H]
        let per_burst = g.add(meta, proto);
        let per_burst = g.add(per_burst, bpos);
        let per_slot = g.gather(per_burst, p.token_burst); // [R,L,H]
        let pos = g.gather(pos_table, p.token_pos); // [R,L,H]
        let x = g.add(tok, per_slot);
        let x = g.add(x, pos);
        let mut x = self.layer_norm(g, x, "embed.ln");

        for layer in 0..cfg.layers {
            x = self.block(g, x, tok_mask, &format!("layer{layer}.burst"));
            let flat = g.reshape(x, &[-1, hi]); // [R·L,H]
            let cls = g.gather(flat, p.burst_cls); // [K,H]
            let grid = g.gather(cls, grid_idx); // [B,N,H]
            let updated = self.block(g, grid, flow_mask, &format!("layer{layer}.flow"));
            let updated = g.reshape(updated, &[-1, hi]); // [B·N,H]
            let updated = g.gather(updated, cell); // [K,H]
            let delta = g.sub(updated, cls);
            let delta = g.gather(delta, p.token_burst); // [R,L,H]
            let delta = g.mul(delta, is_cls); // zero off the CLS slots
            x = g.add(x, delta);
        }
        let tokens = self.layer_norm(g, x, "final_ln");
        let flat = g.reshape(tokens, &[-1, hi]);
        let bursts = g.gather(flat, p.burst_cls); // [K,H]
        let grid = g.gather(bursts, grid_idx); // [B,N,H]
        let flow = self.flow_mean(g, grid, present);
        let f = g.float;
        let burst_present = g.full_like(p.burst_cls, f, 1.0); // [K]
        Encoded {
            tokens,
            bursts,
            flow,
            burst_present,
        }
    }

    /// The burst and flow heads.
    pub fn heads(&mut self, g: &mut Graph, enc: &Encoded) -> HeadOutputs {
        let h = self.cfg.hidden;
        let swap = self.linear(g, enc.bursts, "head.swap", h, 1);
        let swap_logits = g.squeeze(swap, &[-1]);
        let dir = self.linear(g, enc.bursts, "head.direction", h, 1);
        let direction_logits = g.squeeze(dir, &[-1]);
        let meta_pred = self.linear(g, enc.bursts, "head.meta", h, META_TARGETS);
        let class_logits = (self.cfg.num_classes > 0).then(|| {
            let c = self.cfg.num_classes;
            let p = self.linear(g, enc.flow, "head.class_pool", h, h);
            let p = g.tanh(p);
            self.linear(g, p, "head.class", h, c)
        });
        HeadOutputs {
            swap_logits,
            direction_logits,
            meta_pred,
            class_logits,
        }
    }

    /// Masked-token logits `[T, vocab]` at flat positions `index: [T]` into the token
    /// slots (`B·N·L` dense, `R·L` packed); the decoder shares the token embedding.
    pub fn mlm_logits(&mut self, g: &mut Graph, enc: &Encoded, index: V) -> V {
        let h = self.cfg.hidden;
        let vocab = self.cfg.vocab.size as usize;
        let flat = g.reshape(enc.tokens, &[-1, h as i64]);
        let sel = g.gather(flat, index); // [T,H]
        let t = self.linear(g, sel, "head.mlm.dense", h, h);
        let t = g.gelu(t);
        let t = self.layer_norm(g, t, "head.mlm.ln");
        let table = self.param(g, "embed.token", &[vocab, h], Init::Normal(INIT_STD));
        let tt = g.transpose(table, &[1, 0]);
        let logits = g.matmul(t, tt);
        let bias = self.param(g, "head.mlm.bias", &[vocab], Init::Zeros);
        g.add(logits, bias)
    }
}

/// The CLS slot of every burst: `x: [B,N,L,H]` → `[B,N,H]` (a masked sum over the token
/// axis, whose size is known only at run time).
fn select_cls(g: &mut Graph, x: V, is_cls: V) -> V {
    let t = g.mul(x, is_cls);
    g.reduce_sum(t, &[2], false)
}

/// Per-row negative log-likelihood of `labels: [T]` (all valid) under `logits: [T, C]`.
pub fn token_nll(g: &mut Graph, logits: V, labels: V) -> V {
    let idx = g.unsqueeze(labels, &[-1]);
    let picked = g.log_softmax_pick(logits, idx, -1);
    let picked = g.squeeze(picked, &[-1]);
    g.neg(picked)
}

/// Class-weighted mean cross-entropy of `logits: [B, C]` against `labels: [B]` with
/// `class_weight: [C]`: `Σ w_y·(−log p_y) / Σ w_y`, skipping [`IGNORE_INDEX`] (PyTorch's and
/// scikit-learn's weighted mean).
pub fn weighted_cross_entropy(g: &mut Graph, logits: V, labels: V, class_weight: V) -> V {
    let ignore = g.scalar_of(DType::I64, IGNORE_INDEX as f64);
    let skip = g.equal(labels, ignore);
    let zero_i = g.scalar_of(DType::I64, 0.0);
    let safe = g.where_(skip, zero_i, labels);
    let nll = token_nll(g, logits, safe);
    let table = g.unsqueeze(class_weight, &[1]); // [C,1]
    let w = g.gather(table, safe); // [B,1]
    let w = g.squeeze(w, &[1]);
    let zero = g.scalar(0.0);
    let w = g.where_(skip, zero, w);
    weighted_mean(g, nll, w, 1.0)
}

/// Mean cross-entropy of `logits: [T, C]` against int64 `labels: [T]`, skipping
/// [`IGNORE_INDEX`]; 0 when every label is ignored.
pub fn cross_entropy(g: &mut Graph, logits: V, labels: V) -> V {
    let ignore = g.scalar_of(DType::I64, IGNORE_INDEX as f64);
    let skip = g.equal(labels, ignore);
    let zero_i = g.scalar_of(DType::I64, 0.0);
    let safe = g.where_(skip, zero_i, labels);
    let idx = g.unsqueeze(safe, &[-1]);
    let picked = g.log_softmax_pick(logits, idx, -1);
    let picked = g.squeeze(picked, &[-1]);
    let zero = g.scalar(0.0);
    let one = g.scalar(1.0);
    let w = g.where_(skip, zero, one);
    weighted_mean(g, picked, w, -1.0)
}

/// `scale · Σ(x·w) / max(Σw, 1)`.
pub fn weighted_mean(g: &mut Graph, x: V, w: V, scale: f64) -> V {
    let xw = g.mul(x, w);
    let num = g.sum_all(xw);
    let den = g.sum_all(w);
    let one = g.scalar(1.0);
    let den = g.max(den, one);
    let r = g.div(num, den);
    if scale == 1.0 {
        r
    } else {
        g.mul_scalar(r, scale)
    }
}

/// Binary cross-entropy with logits, elementwise: `max(z,0) − z·y + ln(1 + e^{−|z|})`.
pub fn bce_with_logits(g: &mut Graph, z: V, y: V) -> V {
    let zero = g.scalar(0.0);
    let relu = g.max(z, zero);
    let zy = g.mul(z, y);
    let a = g.abs(z);
    let na = g.neg(a);
    let e = g.exp(na);
    let one = g.scalar(1.0);
    let e1 = g.add(e, one);
    let sp = g.log(e1);
    let t = g.sub(relu, zy);
    g.add(t, sp)
}

/// Pinball (quantile) loss, elementwise: `max(q·e, (q−1)·e)` with `e = y − ŷ`.
pub fn pinball(g: &mut Graph, pred: V, target: V, q: f64) -> V {
    let e = g.sub(target, pred);
    let a = g.mul_scalar(e, q);
    let b = g.mul_scalar(e, q - 1.0);
    g.max(a, b)
}
