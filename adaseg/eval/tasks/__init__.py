"""One evaluator per task (:mod:`.base` the interface, :mod:`.registry` which ones score what):
:mod:`.panoptic` (PQ), :mod:`.semantic` (mIoU), :mod:`.instance` (mask AP)."""
