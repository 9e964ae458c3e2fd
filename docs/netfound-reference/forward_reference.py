# independent numpy re-derivation of netFound's forward, for checking the design doc
import numpy as np, json, sys
from safetensors.numpy import load_file
from math import erf, sqrt, pi
D="/work/shared/conformance/netfound-model/test-size/"
m={k:v.astype(np.float64) for k,v in load_file(D+"model/model.safetensors").items()}
fh={k:v.astype(np.float64) for k,v in load_file(D+"finetune_head.safetensors").items()}
b=load_file(D+"batch.safetensors"); o=load_file(D+"outputs.safetensors")
cfg=json.load(open(D+"model/config.json"))
H=cfg["hidden_size"]; nh=cfg["num_attention_heads"]; hd=H//nh
F32MIN=float(np.finfo(np.float32).min)
from scipy.special import erf as serf
def lin(x,p,bias=True):
    y=x@m[p+".weight"].T if p in [k[:-7] for k in m] else None
    return y
def L(x,W,bb=None):
    y=x@W.T
    return y if bb is None else y+bb
def ln(x,w,bb,eps):
    mu=x.mean(-1,keepdims=True); v=((x-mu)**2).mean(-1,keepdims=True)
    y=(x-mu)/np.sqrt(v+eps)*w
    return y if bb is None else y+bb
def gelu_erf(x): return 0.5*x*(1+serf(x/np.sqrt(2)))
def gelu_tanh(x): return 0.5*x*(1+np.tanh(np.sqrt(2/np.pi)*(x+0.044715*x**3)))
ids=b["input_ids"]; am=b["attention_mask"].astype(np.float64)
B,T=ids.shape
Lb=int(b["dataset_burst_sizes"].max())+1; NB=T//Lb
P="base_transformer.embeddings."
we=m[P+"word_embeddings.weight"][ids]
meta=np.stack([b["direction"],b["bytes"]/np.float32(1000),b["pkt_count"],b["iats"]],-1).astype(np.float64)
mh=gelu_erf(L(meta,m[P+"metaEmbeddingLayer1.weight"],m[P+"metaEmbeddingLayer1.bias"]))
me=L(mh,m[P+"metaEmbeddingLayer2.weight"],m[P+"metaEmbeddingLayer2.bias"])
pe=np.repeat(m[P+"protoEmbedding.weight"][b["protocol"]][:,None,:],T,1)
x=L(np.concatenate([we,me,pe],-1),m[P+"compressEmbeddings.weight"],m[P+"compressEmbeddings.bias"])
x=ln(x,m[P+"LayerNorm.weight"],m[P+"LayerNorm.bias"],cfg["layer_norm_eps"])
def rope(q,tab):  # q [..., S, hd], tab [S, hd]
    S=q.shape[-2]; sin=tab[:S,:hd//2]; cos=tab[:S,hd//2:]
    s=np.repeat(sin,2,-1); c=np.repeat(cos,2,-1)
    rot=np.empty_like(q); rot[...,0::2]=-q[...,1::2]; rot[...,1::2]=q[...,0::2]
    return q*c+rot*s
def tlayer(h,mask,pre,tab):  # h [N,S,H], mask [N,S] 0/1
    N,S,_=h.shape
    def heads(t): return t.reshape(N,S,nh,hd).transpose(0,2,1,3)
    q=heads(L(h,m[pre+"attention.self.query.weight"],m[pre+"attention.self.query.bias"]))
    k=heads(L(h,m[pre+"attention.self.key.weight"],m[pre+"attention.self.key.bias"]))
    v=heads(L(h,m[pre+"attention.self.value.weight"],m[pre+"attention.self.value.bias"]))
    q=rope(q,tab); k=rope(k,tab)
    sc=q@k.transpose(0,1,3,2)/np.sqrt(hd)
    bias=(1-mask)[:,None,None,:]*F32MIN
    sc=(sc+bias).astype(np.float32).astype(np.float64)  # float32 absorption of huge negative
    sc=sc-sc.max(-1,keepdims=True); p=np.exp(sc); p/=p.sum(-1,keepdims=True)
    ctx=(p@v).transpose(0,2,1,3).reshape(N,S,H)
    a=L(ctx,m[pre+"attention.output.dense.weight"],m[pre+"attention.output.dense.bias"])
    h=ln(a+h,m[pre+"attention.output.LayerNorm.weight"],m[pre+"attention.output.LayerNorm.bias"],cfg["layer_norm_eps"])
    z=ln(h,m[pre+"mlp_norm.weight"],None,cfg["norm_eps"])
    u=L(z,m[pre+"mlp.Wi.weight"]); I=u.shape[-1]//2
    g=gelu_tanh(u[...,:I])*u[...,I:]
    return h+L(g,m[pre+"mlp.Wo.weight"])
btab=m["base_transformer.encoder.burst_positions.weight"]; ftab=m["base_transformer.encoder.flow_positions.weight"]
for l in range(cfg["num_hidden_layers"]):
    pre=f"base_transformer.encoder.layer.{l}."
    hb=tlayer(x.reshape(B*NB,Lb,H),am.reshape(B*NB,Lb),pre+"burst_encoder.",btab).reshape(B,T,H)
    cls=hb[:,::Lb].copy(); cm=am[:,::Lb]
    hf=tlayer(cls,cm,pre+"flow_encoder.",ftab)
    hb[:,::Lb]=hf; x=hb
ref=o["last_hidden_state"].astype(np.float64)
print("last_hidden_state max abs err", np.abs(x-ref).max(), "max |ref|", np.abs(ref).max())
pad=(am==0); print("  err on padding tokens", np.abs(x-ref)[pad].max(), " on real", np.abs(x-ref)[~pad].max())
print("embedding err", np.abs(x.mean(1)-o["embedding"]).max())
emb_masked=(x*am[...,None]).sum(1)/am.sum(1)[:,None]; print("  (masked-mean would differ by", np.abs(emb_masked-o["embedding"]).max(),")")
flat=x.reshape(B*T,H)[o["mlm_positions"]]
t=ln(gelu_tanh(L(flat,m["lm_head.dense.weight"],m["lm_head.dense.bias"])),m["lm_head.layer_norm.weight"],m["lm_head.layer_norm.bias"],cfg["layer_norm_eps"])
lg=L(t,m[P+"word_embeddings.weight"],m["lm_head.bias"])
print("mlm_logits err (tied decoder)", np.abs(lg-o["mlm_logits"]).max(), "max|ref|",np.abs(o["mlm_logits"]).max())
t2=ln(gelu_erf(L(flat,m["lm_head.dense.weight"],m["lm_head.dense.bias"])),m["lm_head.layer_norm.weight"],m["lm_head.layer_norm.bias"],cfg["layer_norm_eps"])
print("  (erf gelu in lm head would give err", np.abs(L(t2,m[P+"word_embeddings.weight"],m["lm_head.bias"])-o["mlm_logits"]).max(),")")
cls=x[:,::Lb]
def attpool(c,W):
    s=np.tanh(L(L(c,W["attentivePooling.lin_proj.weight"],W["attentivePooling.lin_proj.bias"]),W["attentivePooling.v.weight"]))[...,0]
    s=s-s.max(-1,keepdims=True); a=np.exp(s); a/=a.sum(-1,keepdims=True)
    return (a[...,None]*c).sum(1)
pooled=attpool(cls,m)
print("swap_logits err", np.abs(L(pooled,m["swappedClassifierHiddenLayer.weight"],m["swappedClassifierHiddenLayer.bias"])-o["swap_logits"]).max())
print("metadata_pred err", np.abs(L(cls,m["linearMetadataPred.weight"],m["linearMetadataPred.bias"])-o["metadata_pred"]).max())
print("direction_logits err", np.abs(L(cls,m["dirPred.weight"],m["dirPred.bias"])-o["direction_logits"]).max())
pf=attpool(cls,fh)
hf=L(gelu_erf(L(pf,fh["hiddenLayer.weight"],fh["hiddenLayer.bias"])),fh["hiddenLayer2.weight"],fh["hiddenLayer2.bias"])
print("finetune_logits err", np.abs(L(hf,fh["classifier.weight"],fh["classifier.bias"])-o["finetune_logits"]).max(), "max|ref|", np.abs(o["finetune_logits"]).max())
# sensitivity checks
np.save("/tmp/nfref/x.npy",x)
