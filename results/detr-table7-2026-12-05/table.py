"""Markdown tables of the ECO-DETR results from the compare JSONs in FOLDER (default: here):
table7_beta<b>.json (table7.sh) and exits_<K>.json (exits.sh). Usage: python table.py [FOLDER]"""
import glob
import json
import os
import sys

folder = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
PCT = {"AP_box": "AP", "AP50_box": "AP50", "AP75_box": "AP75", "APs_box": "AP_S", "APm_box": "AP_M", "APl_box": "AP_L"}
GF = {"gflops_total_mean": "total GFLOPs", "gflops_encoder_mean": "encoder GFLOPs"}


def rows(path):
    with open(path) as f:
        return {r["metric"]: r for r in json.load(f)["rows"]}


def cell(r, scale, digits):
    d = r["difference"]
    if r["value"] is None or d["estimate"] is None:
        return "n/a"
    return (f"{scale * r['value']:.{digits}f} ({scale * d['estimate']:+.{digits}f} "
            f"[{scale * d['lo']:+.{digits}f}, {scale * d['hi']:+.{digits}f}])")


t7 = sorted(glob.glob(os.path.join(folder, "table7_beta*.json")), key=lambda p: float(p.split("beta")[1][:-5]))
if t7:
    first = rows(t7[0])
    with open(t7[0]) as f:
        n = json.load(f)["images"]
    print(f"ECO-DETR (detr_tiny) vs DETR at full depth on {n} val images: value (difference to full depth "
          "[paired 90% interval]); AP in %, GFLOPs per image\n")
    names = ["full depth"] + [f"gate beta {p.split('beta')[1][:-5]}" for p in t7]
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key, label in (*PCT.items(), *GF.items()):
        base = first[key]["baseline"]
        scale, digits = (100, 2) if key in PCT else (1, 4)
        vals = ["n/a" if base is None else f"{scale * base:.{digits}f}"] + [cell(rows(p)[key], scale, digits) for p in t7]
        print(f"| {label} | " + " | ".join(vals) + " |")
    print()

ex = [k for k in ("2", "3", "4", "5", "full") if os.path.exists(os.path.join(folder, f"exits_{k}.json"))]
if ex:
    with open(os.path.join(folder, f"exits_{ex[0]}.json")) as f:
        n = json.load(f)["images"]
    print(f"Standard training (pause) vs WSD (wsd+pause) at each exit, {n} val images; box AP / AP50 in %, "
          "WSD - standard with its paired 90% interval\n")
    print("| exit | AP standard | AP WSD | WSD - standard | AP50 standard | AP50 WSD | WSD - standard |")
    print("|---|---|---|---|---|---|---|")
    for k in ex:
        r = rows(os.path.join(folder, f"exits_{k}.json"))
        out = []
        for key in ("AP_box", "AP50_box"):
            d = r[key]["difference"]
            out += [f"{100 * r[key]['baseline']:.2f}", f"{100 * r[key]['value']:.2f}",
                    f"{100 * d['estimate']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]"]
        print(f"| {k} | " + " | ".join(out) + " |")
