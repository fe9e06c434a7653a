"""Mask / box AP on any multiset of images from one run of pycocotools' matching.

``COCOeval.evaluate`` matches each image's detections to its ground truth per category
(``evalImgs``); ``COCOeval.accumulate`` then pools the images. Only the pooling depends on
which images are scored, so :class:`ApMatches` keeps the matching of the area range ``all``
at 100 detections per image -- per detection its image, category, score and, at each of
the 10 IoU thresholds, whether it is a true or a false positive (a detection matched to a
crowd is neither) -- plus each image's count of non-ignored ground truth per category.
:meth:`ApMatches.accumulate` repeats ``accumulate`` + ``summarize`` on any list of images,
repeats allowed (a bootstrap resample), without pycocotools:

* per category, the detections of the listed images in list order, sorted by score with a
  stable sort (COCOeval's mergesort: ties keep that order);
* cumulative TP / FP, recall = TP / #GT, precision = TP / (TP + FP + eps), made monotone
  from the right (the precision envelope), read at the 101 recall thresholds (0 past the
  last recall reached);
* a category with no non-ignored ground truth in the list is -1 and left out of the means;
  AP averages over IoU 0.50:0.95, AP50 / AP75 over one threshold; None when nothing is defined.

AP_S / AP_M / AP_L (COCOeval's area ranges ``small`` / ``medium`` / ``large``) are the same
arithmetic on that range's matching: COCOeval matches the same detections, in the same order,
once per area range, and only which ground truth counts (outside the range: ignored) and which
detections are ignored (matched to an ignored box, or unmatched with an area outside the range)
differ; :class:`ApMatches` keeps those per range (``size_*``) when it is made with them.

COCOeval pools images in sorted-id order; :meth:`ApMatches.accumulate` takes that order as
each image's ``rank`` (:class:`adaseg.eval.image_parts.ImageParts` passes it) and a count per
image (how often a resample drew it). The detections are sorted once, by category, score
(descending), image rank and per-image order -- a resample's pooled list is then that order
with each detection repeated as often as its image was drawn (copies of an image are
identical, so where they fall among themselves does not matter), and no resample sorts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# COCOeval.Params' defaults for iouType 'segm' and 'bbox'
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = 100
SIZE_RANGES = ("small", "medium", "large")  # COCOeval's areaRngLbl after "all"
SIZE_NAMES = ("APs", "APm", "APl")
_EPS = np.spacing(1)


@dataclass
class ApMatches:
    """COCOeval's per-image matching of N images (see the module docstring).

    Attributes:
        category_ids: (K,) int64 COCOeval's category ids (sorted thing ids).
        gt_count: (N, K) int64 non-ignored (not crowd) ground truth per image and category.
        det_image: (M,) int64 image index 0..N-1 of each detection.
        det_category: (M,) int64 index into ``category_ids``.
        det_score: (M,) float64.
        det_tp, det_fp: (M, T) bool, T = 10 IoU thresholds: matched to a non-ignored ground
            truth / matched to nothing. Detections are ordered by image, then category, then
            COCOeval's per-image order (score, stable), at most 100 per image and category.
        size_gt_count: (N, K, 3) int64 or None: ``gt_count`` of the area ranges small, medium,
            large (None: not kept, e.g. a parts file written before they were).
        size_det_tp, size_det_fp: (M, T, 3) bool or None: ``det_tp`` / ``det_fp`` per range.
    """

    category_ids: np.ndarray
    gt_count: np.ndarray
    det_image: np.ndarray
    det_category: np.ndarray
    det_score: np.ndarray
    det_tp: np.ndarray
    det_fp: np.ndarray
    size_gt_count: np.ndarray | None = None
    size_det_tp: np.ndarray | None = None
    size_det_fp: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, k = self.gt_count.shape
        m = len(self.det_score)
        t = len(IOU_THRESHOLDS)
        if len(self.category_ids) != k:
            raise ValueError(f"ApMatches: {len(self.category_ids)} category ids for gt_count with {k} columns")
        for name, arr, shape in (("det_image", self.det_image, (m,)), ("det_category", self.det_category, (m,)),
                                 ("det_tp", self.det_tp, (m, t)), ("det_fp", self.det_fp, (m, t))):
            if arr.shape != shape:
                raise ValueError(f"ApMatches: {name} has shape {arr.shape}, expected {shape}")
        sizes = (self.size_gt_count, self.size_det_tp, self.size_det_fp)
        if any(a is None for a in sizes) and not all(a is None for a in sizes):
            raise ValueError("ApMatches: the area ranges' matching is partly given")
        if sizes[0] is not None:
            a = len(SIZE_RANGES)
            for name, arr, shape in (("size_gt_count", sizes[0], (n, k, a)), ("size_det_tp", sizes[1], (m, t, a)),
                                     ("size_det_fp", sizes[2], (m, t, a))):
                if arr.shape != shape:
                    raise ValueError(f"ApMatches: {name} has shape {arr.shape}, expected {shape}")
        if m and (self.det_image.min() < 0 or self.det_image.max() >= n or self.det_category.min() < 0
                  or self.det_category.max() >= k):
            raise ValueError("ApMatches: a detection's image or category index is out of range")
        if m and np.any(np.diff(self.det_image) < 0):
            raise ValueError("ApMatches: detections are not ordered by image")
        self._sorted: tuple[bytes, np.ndarray] | None = None  # (rank bytes, sorted detections)

    @property
    def num_images(self) -> int:
        return int(self.gt_count.shape[0])

    @property
    def has_sizes(self) -> bool:
        """Whether the area ranges' matching is kept (AP_S / AP_M / AP_L can be resampled)."""
        return self.size_gt_count is not None

    @classmethod
    def from_cocoeval(cls, ev, image_ids: list) -> "ApMatches":
        """The matching of an evaluated ``COCOeval`` (``evaluate()`` run, iouType 'segm' or
        'bbox', default parameters) over the area ranges all, small, medium and large;
        ``image_ids`` names the N images in the order the caller keeps."""
        p = ev.params
        if list(np.round(p.iouThrs, 12)) != list(np.round(IOU_THRESHOLDS, 12)) or p.maxDets[-1] != MAX_DETS:
            raise ValueError("ApMatches: COCOeval must use its default IoU thresholds and 100 detections")
        if not set(("all", *SIZE_RANGES)) <= set(p.areaRngLbl):
            raise ValueError(f"ApMatches: COCOeval's area ranges {p.areaRngLbl} lack all / small / medium / large")
        position = {img: i for i, img in enumerate(image_ids)}
        if len(position) != len(image_ids):
            raise ValueError("ApMatches: image ids are not unique")
        img_ids, cat_ids = list(p.imgIds), list(p.catIds)
        if set(img_ids) != set(position):
            raise ValueError("ApMatches: COCOeval's images are not the images given")
        n_img, n_area = len(img_ids), len(p.areaRng)
        ranges = [p.areaRngLbl.index(a) for a in ("all", *SIZE_RANGES)]
        gt_count = np.zeros((len(ranges), len(image_ids), len(cat_ids)), dtype=np.int64)
        rows: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
        for k in range(len(cat_ids)):
            for i, img in enumerate(img_ids):
                per_range = [ev.evalImgs[k * n_area * n_img + a * n_img + i] for a in ranges]
                if per_range[0] is None:  # no ground truth and no detection: None in every range
                    continue
                pos = position[img]
                tp, fp = [], []
                for r, e in enumerate(per_range):
                    gt_count[r, pos, k] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
                    matched = np.asarray(e["dtMatches"]).reshape(len(IOU_THRESHOLDS), -1) != 0
                    ignored = np.asarray(e["dtIgnore"]).reshape(len(IOU_THRESHOLDS), -1).astype(bool)
                    tp.append((matched & ~ignored).T)
                    fp.append((~matched & ~ignored).T)
                if len(per_range[0]["dtScores"]):
                    rows.append((pos, k, np.asarray(per_range[0]["dtScores"], dtype=np.float64),
                                 np.stack(tp, axis=-1), np.stack(fp, axis=-1)))
        rows.sort(key=lambda r: (r[0], r[1]))
        t, a = len(IOU_THRESHOLDS), len(ranges)
        det_tp = np.concatenate([r[3] for r in rows]) if rows else np.zeros((0, t, a), bool)
        det_fp = np.concatenate([r[4] for r in rows]) if rows else np.zeros((0, t, a), bool)
        return cls(
            category_ids=np.asarray(cat_ids, dtype=np.int64),
            gt_count=gt_count[0],
            det_image=np.concatenate([np.full(len(r[2]), r[0]) for r in rows]).astype(np.int64) if rows
            else np.zeros(0, np.int64),
            det_category=np.concatenate([np.full(len(r[2]), r[1]) for r in rows]).astype(np.int64) if rows
            else np.zeros(0, np.int64),
            det_score=np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, np.float64),
            det_tp=np.ascontiguousarray(det_tp[..., 0]), det_fp=np.ascontiguousarray(det_fp[..., 0]),
            size_gt_count=np.ascontiguousarray(np.moveaxis(gt_count[1:], 0, -1)),
            size_det_tp=np.ascontiguousarray(det_tp[..., 1:]), size_det_fp=np.ascontiguousarray(det_fp[..., 1:]),
        )

    def _pooled_order(self, rank: np.ndarray) -> np.ndarray:
        """(M,) detections by category, score descending, then image ``rank``, then stored
        order: COCOeval's stable mergesort of its concatenation in image-rank order."""
        key = rank.tobytes()
        if self._sorted is None or self._sorted[0] != key:
            by_image = np.argsort(rank[self.det_image], kind="stable")  # stored order within an image
            order = by_image[np.lexsort((-self.det_score[by_image], self.det_category[by_image]))]
            self._sorted = (key, order)
        return self._sorted[1]

    def precision(self, weights: np.ndarray, rank: np.ndarray, size: str | None = None) -> np.ndarray:
        """(T, R, K) precision at the recall thresholds over the images drawn ``weights`` (N,)
        times each (a resample: repeats allowed), pooled in ``rank`` (N,) order (COCOeval's:
        sorted image id); -1 for categories without ground truth there. ``size``: one of
        :data:`SIZE_RANGES` (that area range's matching), None: all areas."""
        if size is None:
            gt_count, det_tp, det_fp = self.gt_count, self.det_tp, self.det_fp
        elif not self.has_sizes:
            raise ValueError("ApMatches: the area ranges' matching was not kept")
        else:
            a = SIZE_RANGES.index(size)
            gt_count, det_tp, det_fp = self.size_gt_count[..., a], self.size_det_tp[..., a], self.size_det_fp[..., a]
        weights = np.asarray(weights, dtype=np.int64)
        order = self._pooled_order(np.asarray(rank, dtype=np.int64))
        reps = weights[self.det_image[order]]
        det = np.repeat(order, reps)
        cats = self.det_category[det]
        bounds = np.searchsorted(cats, np.arange(len(self.category_ids) + 1))
        npig = weights @ gt_count
        t_n, r_n = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
        out = -np.ones((t_n, r_n, len(self.category_ids)))
        for k in np.nonzero(npig > 0)[0]:
            sel = det[bounds[k]:bounds[k + 1]]
            nd = len(sel)
            if nd == 0:
                out[:, :, k] = 0.0
                continue
            tp = np.cumsum(det_tp[sel], axis=0).astype(float)  # (nd, T)
            fp = np.cumsum(det_fp[sel], axis=0).astype(float)
            rc = tp / npig[k]
            pr = tp / (fp + tp + _EPS)
            pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]  # the envelope: max over higher recall
            for t in range(t_n):
                inds = np.searchsorted(rc[:, t], RECALL_THRESHOLDS, side="left")
                q = np.zeros(r_n)
                reached = inds < nd
                q[reached] = pr[inds[reached], t]
                out[t, :, k] = q
        return out

    def accumulate(self, weights: np.ndarray, rank: np.ndarray, *, sizes: bool = False) -> dict[str, float | None]:
        """{'AP', 'AP50', 'AP75'} (fractions; None where no category has ground truth) over
        the images drawn ``weights`` times each, pooled in ``rank`` order (see :meth:`precision`);
        with ``sizes`` also {'APs', 'APm', 'APl'} (None where no category has ground truth in
        the range, as COCOeval's -1; all None when the ranges' matching was not kept)."""
        prec = self.precision(weights, rank)
        out = {"AP": _mean_defined(prec)}
        for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
            t = np.where(thr == IOU_THRESHOLDS)[0]
            out[name] = _mean_defined(prec[t])
        if sizes:
            for name, size in zip(SIZE_NAMES, SIZE_RANGES):
                out[name] = _mean_defined(self.precision(weights, rank, size)) if self.has_sizes else None
        return out


def _mean_defined(prec: np.ndarray) -> float | None:
    # COCOeval.summarize: the mean over the entries > -1 (absent categories), -1 when none
    s = prec[prec > -1]
    return float(np.mean(s)) if s.size else None
