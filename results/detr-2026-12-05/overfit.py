"""Overfit check: detr_tiny (standard recipe: full depth, no pausing) on the first --n training
images without augmentation, AdamW, batch --bs; box AP on those same images every --every
iterations (eval transform, boxes from the masks, pycocotools)."""
import os, sys, time, torch, argparse
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *
p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=16); p.add_argument("--iters", type=int, default=300)
p.add_argument("--lr", type=float, default=1e-4); p.add_argument("--clip", type=float, default=0.1)
p.add_argument("--bs", type=int, default=8); p.add_argument("--aug", type=int, default=0)
p.add_argument("--queries", type=int, default=20); p.add_argument("--every", type=int, default=50)
p.add_argument("--eval-n", type=int, default=None)  # AP on the first N of the --n images (default all)
a = p.parse_args()
torch.set_num_threads(1); torch.manual_seed(0)
ds = build_dataset("synthetic", "train", train=bool(a.aug))
ds_eval = build_dataset("synthetic", "train", train=False)
model = create_model("detr_tiny", num_queries=a.queries)
crit = model.build_criterion()
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
idx = list(range(a.n)); t0 = time.time()
for it in range(a.iters):
    g = torch.Generator().manual_seed(it)
    sel = [idx[i] for i in torch.randperm(a.n, generator=g)[:a.bs].tolist()]
    if a.aug: ds.reseed(it)
    b = collate([ds[i] for i in sel])
    out = model(b["images"], b["padding_mask"], AdaptiveSettings())
    parts = crit(out, b["targets"])
    opt.zero_grad(); parts["loss"].backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip if a.clip > 0 else 1e9)
    opt.step()
    if (it + 1) % 10 == 0:
        print(f"it {it+1} loss {parts['loss'].item():.3f} ce {parts['loss_ce'].item():.3f} l1 {parts['loss_bbox'].item():.3f} giou {parts['loss_giou'].item():.3f} gn {gn:.2f} t {time.time()-t0:.0f}s", flush=True)
    if (it + 1) % a.every == 0:
        print("AP train-subset", ap(model, ds_eval, idx[:a.eval_n]), flush=True)
