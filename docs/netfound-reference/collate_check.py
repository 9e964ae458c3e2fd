import json, numpy as np, pyarrow.ipc as ipc
from safetensors.numpy import load_file
D="/work/shared/conformance/netfound-model/test-size/"; A="/work/shared/conformance/netfound/arrow/"
b=load_file(D+"batch.safetensors"); fl=json.load(open(D+"flows.json"))["flows"]
HDR={6:12,1:7,17:6}; PAY=6; CLS=65537; LMAX=73; NBMAX=12
def row(f,r):
    with open(A+f,"rb") as fh: t=ipc.open_stream(fh).read_all()
    return t.slice(r,1).to_pylist()[0]
flows=[]
for e in fl:
    x=row(e["arrow_file"],e["row"]); p=x["protocol"]; h=HDR[p]
    bursts=[[tok for s in range(0,len(bt),h+PAY) for tok in bt[s:s+h]] for bt in x["burst_tokens"]]
    sizes=[len(bu) for bu in bursts]
    def per_tok(vals): return [([v]*n) for v,n in zip(vals,sizes)]
    iat_ms=[int(v*1e-3) for v in x["iats"]]
    dirs=[1 if d else -1 for d in x["directions"]]
    def tf(fl_, prep): return [([prep if prep is not None else bu[0]]+bu)[:LMAX] for bu in fl_][:NBMAX] if True else None
    ids=[([CLS]+[t+1 for t in bu])[:LMAX] for bu in bursts][:NBMAX]
    att=[([1]+[1]*len(bu))[:LMAX] for bu in bursts][:NBMAX]
    def meta(vals): return [([v[0]]+v)[:LMAX] if v else [] for v in per_tok(vals)][:NBMAX]
    flows.append(dict(ids=ids,att=att,direction=meta(dirs),bytes=meta(x["bytes"]),pkt_count=meta(x["counts"]),iats=meta(iat_ms),
                      protocol=p,flow_duration=x["flow_duration"],sizes=sizes,total=len(bursts)))
L=max(max(f["sizes"]) for f in flows)+1; NB=max(f["total"] for f in flows)
def pad(fl_):
    out=[bu+[0]*(L-len(bu)) for bu in fl_]; out+= [[0]*L]*(NB-len(out)); return np.array(out).reshape(-1)
ok=True
for k in ["ids","att","direction","bytes","pkt_count","iats"]:
    arr=np.stack([pad(f[k]) for f in flows]); key={"ids":"input_ids","att":"attention_mask"}.get(k,k)
    eq=(arr.astype(b[key].dtype)==b[key]).all(); ok&=eq; print(key, "equal:", eq)
print("protocol", (np.array([f["protocol"] for f in flows])==b["protocol"]).all())
print("flow_duration", (np.array([f["flow_duration"] for f in flows],dtype=np.float32)==b["flow_duration"]).all())
print("dataset_burst_sizes", (np.array([f["sizes"]+[0]*(NB-len(f["sizes"])) for f in flows])==b["dataset_burst_sizes"]).all())
