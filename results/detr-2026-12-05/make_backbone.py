"""The shipped m2f_tiny synthetic base's ResNet-tiny as a backbone checkpoint for detr_tiny
(layer4 dropped: detr_tiny reads layer3 at stride 16)."""
import sys, os
from adaseg.storage.checkpoint import load_checkpoint, save_checkpoint
from adaseg.models.registry import create_model
from adaseg.models.hf.importer import BACKBONE_KIND
src, out = sys.argv[1], sys.argv[2]
tensors, meta = load_checkpoint(src)
want = create_model("detr_tiny").backbone.state_dict()
state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.") and k[len("backbone."):] in want}
missing = set(want) - set(state)
assert not missing, missing
save_checkpoint(out, state, kind=BACKBONE_KIND, config={"name": "resnet_tiny"},
                extra={"source": "adaseg", "source_path": os.path.abspath(src),
                       "note": "backbone of the m2f_tiny synthetic base (train split), layer4 dropped"})
print("wrote", out, len(state), "tensors; dropped", sorted({k.split('.')[1] for k in tensors if k.startswith('backbone.') and k[9:] not in want}))
