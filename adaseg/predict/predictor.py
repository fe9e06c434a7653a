"""``adaseg.Predictor``: a trained run (or a parent checkpoint) as a function from images to
predictions, with the gate's exit, the paused tokens and the GFLOPs of every image.

::

    import adaseg

    predict = adaseg.Predictor("runs/default", gate="latest", pause="3:0.4,5:0.3")
    for p in predict(["street.jpg", "photo.png"]):
        print(p.name, p.exit, p.gflops["total"], [s["category_id"] for s in p.segments])

Images go through the run's dataset's eval transform (e.g. shorter side 800 for COCO, native
size for Cityscapes and the synthetic set) and are padded into a batch as ``adaseg eval``
pads them; every output is resized back to the image's own size. Loading uses the parent,
gate and data modules only, never the training steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from adaseg.data.meta import PIXEL_MEAN, PIXEL_STD
from adaseg.predict.images import ImageError, LoadedImage, read_image, to_rgb
from adaseg.predict.result import PausedStage, Prediction
from adaseg.choices import TASKS


class PredictError(ValueError):
    """A setting or file that makes prediction impossible; ``param`` names the option (or None)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class PredictTypeError(PredictError, TypeError):
    """An argument of the wrong type (a TypeError, and a PredictError naming the parameter)."""


class Predictor:
    """Predictions of a trained parent on arbitrary images.

    Args:
        run_or_checkpoint: a run directory (its parent, its dataset's categories and eval
            transform, its gates) or a model checkpoint file (a parent, the shipped base, an
            imported Hugging Face model): its recorded categories and resize are used (an
            imported model's ``id2label``, ids as the HF label ids), or ``data``'s when given.
        data: a ``--data`` spec whose categories and eval transform to use (default: the
            run's dataset); it must have the parent's categories.
        gate: ``"auto"`` (the run's latest gate when it has one and no ``exit`` is given),
            ``"latest"``, ``"none"`` or a gate file.
        exit: a fixed exit layer for every image (exclusive with a gate).
        pause: a pause plan (:class:`~adaseg.models.adaptive.plan.PausePlan` or ``"3:0.4,5:0.3"``).
        pause_mode: ``"entropy"`` or ``"random"``; ``seed``: random pausing's generator.
        pause_output: ``"decoder"`` or ``"aux"`` (PAUMER's early exit: a paused token is
            labelled by the auxiliary decoder of its pause layer; needs ``pause`` and a model
            with an early-exit output, e.g. Segmenter).
        task: ``"panoptic"``, ``"semantic"`` or ``"instance"`` (default: the model's task; a
            detection model predicts boxes, ``task`` is then refused).
        score_threshold: a detection model's boxes drawn on the pictures score at least this
            (default 0.5: transformers' ``post_process_object_detection`` default); every box
            is still returned and written.
            Refused for segmentation models.
        device: where the model runs; ``batch_size``: images per forward pass (images of a
            batch are padded to a common size, as in ``adaseg eval``; 1 keeps each image's
            prediction independent of its neighbours).
        flops: count each image's GFLOPs (one extra forward per image unless batch_size=1).
        cuda_graph: run the adaptive encoder as CUDA graphs at these fixed settings
            (:class:`~adaseg.models.adaptive.cuda_graph.GraphedModel`; a CUDA device, entropy or
            no pausing, ``flops=False``: a replay is invisible to the FLOP counter); batches
            with padding run eagerly.

    Every argument is checked before anything is loaded, as ``adaseg predict`` checks its
    options: a wrong type raises :class:`PredictTypeError` (a TypeError and a
    :class:`PredictError`), a bad value :class:`PredictError` (a ValueError), each one line
    naming the parameter. Numbers are ints (never bools or strings: ``exit="3"`` is refused);
    ``pause``, ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; CUDA without a CUDA
    device is refused), ``gate``, ``data`` and ``task`` are given as strings. Settings that
    would be silently ignored are refused: ``pause_mode="random"`` without ``pause``, a
    non-zero ``seed`` without random pausing.
    """

    def __init__(self, run_or_checkpoint: str | os.PathLike = "runs/default", *, data: str | None = None,
                 gate: str = "auto", exit: int | None = None, pause=None, pause_mode: str = "entropy",
                 seed: int = 0, task: str | None = None, device: str | torch.device = "cpu", batch_size: int = 1,
                 flops: bool = True, pause_output: str = "decoder", cuda_graph: bool = False,
                 score_threshold: float | None = None):
        from adaseg.models.adaptive.settings import AdaptiveSettings

        run_or_checkpoint, data, gate, exit, pause, pause_mode, seed, task, self.device, batch_size, flops = \
            _check_arguments(run_or_checkpoint, data=data, gate=gate, exit=exit, pause=pause, pause_mode=pause_mode,
                             seed=seed, task=task, device=device, batch_size=batch_size, flops=flops)
        _check_pause_output(pause_output, pause)
        _check_cuda_graph(cuda_graph, self.device, flops)
        score_threshold = _check_score_threshold(score_threshold)
        self.batch_size = batch_size
        self.flops = flops
        self.model, self.meta, self.transform, self.gate_path, gate_exits, parent_path = _load(
            run_or_checkpoint, data=data, gate=gate, exit=exit, device=self.device)
        self._source, self._data = Path(run_or_checkpoint), data
        if self.model.task == "detection":
            if task is not None:
                raise PredictError(f"--task {task}: this model predicts boxes (detection) only; leave --task out",
                                   "task")
        elif score_threshold is not None:
            raise PredictError(f"--score-threshold {score_threshold:g} picks the boxes drawn by a detection model; "
                               f"this model predicts {self.model.task} segmentation", "score-threshold")
        from adaseg.predict.boxes import DEFAULT_SCORE_THRESHOLD

        self.score_threshold = DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
        self.task = task or self.model.task
        if self.task not in ("semantic", "detection") and self.model.task != "panoptic":
            raise PredictError(f"--task {self.task}: this model predicts {self.model.task} segmentation only", "task")
        _check_exit_and_pause(self.model, exit, pause, gate_exits)
        if pause_output == "aux":
            try:
                self.model.check_early_exit()
            except ValueError as exc:
                raise PredictError(str(exc), "pause-output") from None
        _check_trained(parent_path, pause, pause_mode)
        self.exit_source = "gate" if self.gate_path is not None else ("fixed" if exit is not None else "full")
        self._generator = None
        if pause is not None and pause_mode == "random":
            self._generator = torch.Generator(device=self.device).manual_seed(int(seed))
        try:
            self.settings = AdaptiveSettings(exits="gate" if self.gate_path is not None else exit, pause=pause,
                                             pause_mode=pause_mode, generator=self._generator,
                                             pause_output=pause_output)
        except (TypeError, ValueError) as exc:
            raise PredictError(str(exc), "pause-mode") from None
        self._graphed = None
        if cuda_graph:
            from adaseg.models.adaptive.cuda_graph import GraphedModel

            try:
                self._graphed = GraphedModel(self.model, self.settings)
            except ValueError as exc:
                raise PredictError(str(exc), "cuda-graph") from None
        self._lut = np.array([c.id for c in self.meta.categories], dtype=np.int64)
        self._things = {c.id for c in self.meta.categories if c.isthing}

    # ------------------------------------------------------------------ inputs
    def load(self, image: Any, *, name: str | None = None) -> LoadedImage:
        """A path, PIL image or (H, W, 3) / (H, W) uint8 array -> :class:`LoadedImage`
        (:class:`~adaseg.predict.images.ImageError` for an unreadable file)."""
        if isinstance(image, LoadedImage):
            return image
        if isinstance(image, (str, os.PathLike)):
            return read_image(image, name=name)
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
                raise ImageError(f"array {name or ''}: need (H, W, 3) or (H, W) uint8, got {image.dtype} "
                                 f"{tuple(image.shape)}")
            rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
            return LoadedImage(name=name or "image", rgb=np.ascontiguousarray(rgb))
        if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
            rgb, note = to_rgb(image)
            return LoadedImage(name=name or "image", rgb=rgb, note=note)
        raise ImageError(f"cannot predict a {type(image).__name__}: give a path, a PIL image or a uint8 array")

    def __call__(self, images: Any) -> list[Prediction]:
        """Predict one image or a list (paths, PIL images, uint8 arrays); a list in, a list out.
        Names default to file stems (``image``, ``image-2``, ... for arrays)."""
        from adaseg.predict.images import unique_names

        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        loaded = [self.load(x) for x in items]
        for item, name in zip(loaded, unique_names([x.name for x in loaded])):
            item.name = name
        return self.predict_loaded(loaded)

    # ------------------------------------------------------------------ prediction
    def sample(self, image: LoadedImage) -> dict:
        """The model input of one image: the eval transform and normalisation a dataset sample
        gets (:class:`~adaseg.data.SegmentationDataset`), without labels."""
        chw = image.rgb.transpose(2, 0, 1).astype(np.float32)
        h0, w0 = image.rgb.shape[:2]
        ids = np.zeros((h0, w0), dtype=np.int64)
        if self.transform is not None:
            chw, ids = self.transform(chw, ids, None)
        mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(PIXEL_STD, dtype=np.float32)[:, None, None]
        return {"image": torch.from_numpy(np.ascontiguousarray((chw - mean) / std, dtype=np.float32)),
                "orig_size": (h0, w0)}

    def predict_loaded(self, images: list[LoadedImage], samples: list[dict] | None = None,
                       image_ids: list | None = None) -> list[Prediction]:
        """Predict loaded images in batches of ``batch_size``. ``samples``: their model inputs
        when they come from a dataset (``dataset[i]``), else made by :meth:`sample`."""
        out: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            part = images[start:start + self.batch_size]
            made = samples[start:start + self.batch_size] if samples is not None else [self.sample(x) for x in part]
            ids = image_ids[start:start + self.batch_size] if image_ids is not None else [None] * len(part)
            out.extend(self._predict_batch(part, made, ids))
        return out

    def _forward(self, images: torch.Tensor, padding: torch.Tensor):
        if self._graphed is not None and not torch.is_grad_enabled() and not bool(padding.any()):
            return self._graphed(images)
        return self.model(images, padding, self.settings)

    def _predict_batch(self, part: list[LoadedImage], samples: list[dict], image_ids: list) -> list[Prediction]:
        from adaseg.data import collate
        from adaseg.eval.flops import FlopCounter

        batch = collate([_as_collatable(s) for s in samples])
        images, padding = batch["images"].to(self.device), batch["padding_mask"].to(self.device)
        counter = FlopCounter(scopes={"encoder": self.model.encoder_modules()}) if self.flops else None
        counts = None
        if counter is not None and len(part) == 1:
            out, count = counter.count(self._forward, images, padding)  # one pass: its output and its cost
            counts = [count]
        else:
            with torch.no_grad():
                out = self._forward(images, padding)
        if counter is not None and counts is None:
            counts = [counter.count(self._forward, images[j:j + 1], padding[j:j + 1])[1] for j in range(len(part))]
        sizes, orig = batch["sizes"], batch["orig_sizes"]
        results = self._postprocess(out, sizes, orig)
        plan = out.exit_plan.tolist()
        shapes = [tuple(int(v) for v in s) for s in out.token_shapes.tolist()]
        preds = []
        for j, item in enumerate(part):
            paused = []
            for rec in out.paused:
                hit = (rec.rows == j).nonzero().flatten()
                if hit.numel():
                    paused.append(PausedStage(rec.layer, rec.positions[int(hit[0])].cpu().numpy().astype(np.int64)))
            p = Prediction(name=item.name, size=tuple(orig[j]), task=self.task, exit=int(plan[j]),
                           score_threshold=self.score_threshold,
                           depth=int(self.model.depth), exit_source=self.exit_source, token_shapes=shapes,
                           input_size=tuple(out.input_size), valid_size=tuple(sizes[j]), paused=paused,
                           early_exit=bool(out.early_exit),
                           note=item.note, source=item.source, image=item.rgb, image_id=image_ids[j])
            if counts is not None:
                c = counts[j]
                p.gflops = {"total": c.total / 1e9, "encoder": c.scopes["encoder"] / 1e9}
            self._fill(p, results, j)
            preds.append(p)
        return preds

    def _postprocess(self, out, sizes, orig) -> dict[str, list]:
        post = self.model.postprocess
        res: dict[str, list] = {}
        if self.task == "detection":  # boxes at the original size, as adaseg eval scores them
            return {"detection": post(out, sizes, task="detection", output_sizes=orig)}
        if self.task == "panoptic":
            res["panoptic"] = post(out, sizes, task="panoptic", output_sizes=orig)
        elif self.task == "instance":
            res["instance"] = post(out, sizes, task="instance", output_sizes=orig)
        res["semantic"] = post(out, sizes, task="semantic", output_sizes=orig)
        return res

    def _fill(self, p: Prediction, results: dict[str, list], j: int) -> None:
        from adaseg.data.dataset import segment_info

        if "detection" in results:
            r = results["detection"][j]
            cats = [int(self._lut[int(c)]) for c in r["labels"].tolist()]
            # as adaseg eval: boxes of classes that are not things (a panoptic set's stuff) are left out
            p.detections = [{"category_id": c, "score": float(sc), "box": [float(v) for v in b]}
                            for c, sc, b in zip(cats, r["scores"].tolist(), r["boxes"].tolist())
                            if c in self._things]
            return
        p.semantic = results["semantic"][j].cpu().numpy().astype(np.int64)
        if "panoptic" in results:
            id_map, segments = results["panoptic"][j]
            id_map = id_map.cpu().numpy().astype(np.int32)
            p.panoptic = id_map
            for s in segments:
                info = segment_info(id_map == s["id"], seg_id=s["id"], category_id=int(self._lut[s["category_id"]]),
                                    iscrowd=0)
                p.segments.append({**info, "isthing": int(bool(s["isthing"])), "score": float(s["score"])})
        if "instance" in results:
            r = results["instance"][j]
            p.instances = [{"category_id": int(self._lut[int(c)]), "score": float(s), "mask": m.cpu().numpy()}
                           for c, s, m in zip(r["labels"].tolist(), r["scores"].tolist(), r["masks"])]

    def dataset(self, split: str = "val"):
        """The ``split`` (``"train"`` or ``"val"``) of the dataset whose categories this predictor
        uses (``data``, else the run's own), with its eval transform."""
        from adaseg.choices import SPLITS
        from adaseg.data import DataError, build_dataset
        from adaseg.runs.run_data import build_run_dataset
        from adaseg.runs.run_dir import RunDir
        from adaseg.utils.arguments import ArgumentTypeError, check_choice

        try:
            check_choice(split, "split", SPLITS)
        except ArgumentTypeError as exc:
            raise PredictTypeError(str(exc), "split") from None
        except ValueError as exc:
            raise PredictError(str(exc), "split") from None
        try:
            if self._source.is_dir():
                return build_run_dataset(RunDir(self._source).read_config(), self._data, split)[0]
            if self._data is None:
                raise PredictError(f"{self._source} is a checkpoint, not a run: it has no {split} split; give data= "
                                   "(--data SPEC) for a dataset to predict", "data")
            return build_dataset(self._data, split, train=False)
        except DataError as exc:
            raise PredictError(str(exc), "data") from None

    def predict_dataset(self, dataset, indices: Iterable[int] | None = None) -> list[Prediction]:
        """Predict ``dataset``'s images (a :class:`~adaseg.data.SegmentationDataset` with the
        parent's categories) exactly as ``adaseg eval`` feeds them: its own samples, so the
        predictions line up with its ground truth. Names are the image file stems. ``indices``:
        ints in 0..len(dataset)-1 (None: all), else PredictTypeError/PredictError."""
        from adaseg.data.panoptic_io import read_image as read_rgb

        from adaseg.utils.arguments import ArgumentTypeError, check_int

        if not hasattr(dataset, "records") or not hasattr(dataset, "__getitem__"):
            raise PredictTypeError(f"dataset must be a SegmentationDataset (e.g. predictor.dataset('val')), "
                                   f"got {type(dataset).__name__}", None)
        if indices is not None and (isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable)):
            raise PredictTypeError(f"indices must be an iterable of image indices or None, "
                                   f"got {type(indices).__name__}", None)
        idx = list(range(len(dataset))) if indices is None else list(indices)
        try:
            idx = [check_int(i, "indices", minimum=0, maximum=len(dataset) - 1) for i in idx]
        except ArgumentTypeError as exc:
            raise PredictTypeError(str(exc), None) from None
        except ValueError as exc:
            raise PredictError(f"{exc} (the dataset has {len(dataset)} images)", None) from None
        loaded, samples, ids = [], [], []
        for i in idx:
            rec = dataset.records[i]
            loaded.append(LoadedImage(name=Path(rec.image_path).stem, rgb=read_rgb(rec.image_path),
                                      source=rec.image_path))
            samples.append(dataset[i])
            ids.append(rec.image_id)
        return self.predict_loaded(loaded, samples, ids)


def _as_collatable(sample: dict) -> dict:
    # collate() pads images and stacks targets; a prediction has no targets
    _, h, w = sample["image"].shape
    if "masks" in sample:
        return sample
    return {"image": sample["image"], "masks": torch.zeros(0, h, w, dtype=torch.bool),
            "labels": torch.zeros(0, dtype=torch.long), "semantic": torch.zeros(h, w, dtype=torch.long),
            "image_id": None, "file_name": "", "orig_size": sample["orig_size"], "difficulty": None}


def _load(source, *, data: str | None, gate: str, exit: int | None, device: torch.device):
    """-> (model with its gate attached, dataset meta, eval transform, gate path | None, the
    gate's exits | None, the parent checkpoint's path). A checkpoint without ``data`` uses
    the categories and resize it records (:mod:`adaseg.runs.from_checkpoint`)."""
    from adaseg.data import DataError, build_dataset
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.runs.from_checkpoint import CheckpointRun, check_data_fits, recorded_meta, recorded_transform
    from adaseg.runs.gate_file import choose_gate, load_gate
    from adaseg.runs.parent import load_parent
    from adaseg.runs.run_data import build_run_dataset
    from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError

    path = Path(source)
    if gate not in ("auto", "none") and exit is not None:
        raise PredictError("--exit and --gate are exclusive: a gate picks each image's exit (use --gate none)", "exit")
    try:
        if path.is_dir():
            run = RunDir(path)
            run.require("config", "parent")
            model, info = load_parent(run.parent_path, device=device)
            dataset, _ = build_run_dataset(run.read_config(), data, "val")
            meta, transform, parent_path = dataset.meta, dataset.transform, run.parent_path
            gate_path = choose_gate(run, gate, exit=exit)
        elif path.is_file():
            model, info = load_parent(path, device=device)
            parent_path = path
            if data is None:
                meta, transform = recorded_meta(info, task=model.task), recorded_transform(info)
                if meta is None:
                    raise PredictError(f"{path} records no categories: give data= (--data) for its categories and "
                                       "eval transform", "data")
            else:
                dataset = build_dataset(data, "val", train=False)
                try:
                    check_data_fits(model, dataset.meta, spec=data, path=path)
                except RunDirError as exc:
                    raise PredictError(str(exc), "data") from None
                meta, transform = dataset.meta, dataset.transform
            if gate == "auto":
                gate = "none"
            if gate == "latest":
                CheckpointRun(path, data=data).require("gate")  # says how to make a run with a gate
            gate_path = None if gate == "none" else Path(gate)
            if gate_path is not None and not gate_path.is_file():
                raise PredictError(f"--gate {gate}: no such file", "gate")
        else:
            raise PredictError(f"{path}: neither a run directory nor a checkpoint file", None)
        gate_exits = None
        if gate_path is not None:
            g, _ = load_gate(gate_path, parent_fingerprint=info["fingerprint"])
            try:
                model.set_gate(g.to(device))
                gate_exits = tuple(int(e) for e in g.exits)
            except ValueError as exc:
                raise PredictError(f"{gate_path}: {exc}", "gate") from None
    except (MissingStepError, RunDirError, CheckpointError, DataError) as exc:
        raise PredictError(str(exc), None) from None
    return model, meta, _image_transform(transform), gate_path, gate_exits, parent_path


def _image_transform(transform):
    """The dataset's eval resize as the plain image transform :meth:`Predictor.sample` calls
    (a detection dataset's transform moves boxes, not a label map)."""
    from adaseg.data.transforms import EvalTransform

    if transform is None or type(transform) is EvalTransform or not isinstance(transform, EvalTransform):
        return transform
    return EvalTransform(short=transform.short, max_size=transform.max_size)


def _check_arguments(source, *, data, gate, exit, pause, pause_mode, seed, task, device, batch_size, flops):
    """The constructor's arguments checked and normalised, or PredictError/PredictTypeError
    naming the first bad one (``param``: its CLI flag name)."""
    from adaseg.choices import PAUSE_MODES
    from adaseg.models.adaptive.plan import PausePlan
    from adaseg.utils.arguments import ArgumentTypeError, check_bool, check_choice, check_int, describe
    from adaseg.utils.device import parse_device

    def path_like(value, name: str, flag: str | None, what: str, optional: bool = False):
        if value is None and optional:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise PredictTypeError(f"{name} must be {what}, got {describe(value)}", flag)
        text = os.fspath(value)
        if not isinstance(text, str) or not text.strip():
            raise PredictError(f"{name} must be {what}, got {value!r}", flag)
        return text

    source = path_like(source, "run_or_checkpoint", None, "a run directory or a parent checkpoint file (a path)")
    data = path_like(data, "data", "data", "a --data spec (a name or a path) or None", optional=True)
    gate = path_like(gate, "gate", "gate", "'auto', 'latest', 'none' or a gate file")
    checks = [
        ("exit", "exit", lambda: check_int(exit, "exit", minimum=1, optional=True)),
        ("seed", "seed", lambda: check_int(seed, "seed", minimum=0, maximum=2 ** 32 - 1)),
        ("batch-size", "batch_size", lambda: check_int(batch_size, "batch_size", minimum=1)),
        ("pause-mode", "pause_mode", lambda: check_choice(pause_mode, "pause_mode", PAUSE_MODES)),
        ("task", "task", lambda: check_choice(task, "task", TASKS, optional=True)),
        ("flops", "flops", lambda: check_bool(flops, "flops")),
        ("device", "device", lambda: parse_device(device, name="device")),
    ]
    values = {}
    for flag, name, check in checks:
        try:
            values[name] = check()
        except ArgumentTypeError as exc:
            raise PredictTypeError(str(exc), flag) from None
        except ValueError as exc:
            raise PredictError(str(exc), flag) from None
    if isinstance(pause, str):
        try:
            pause = PausePlan.parse(pause)
        except ValueError as exc:
            raise PredictError(f"{pause!r}: {exc}", "pause") from None
    elif pause is not None and not isinstance(pause, PausePlan):
        raise PredictTypeError(f"pause must be a PausePlan, a spec like '3:0.4,5:0.3' or None, got {describe(pause)}",
                               "pause")
    if pause is None and pause_mode == "random":
        raise PredictError("pause_mode='random' chooses which tokens pause: it needs pause (e.g. pause='3:0.4,5:0.3')",
                           "pause-mode")
    if values["seed"] != 0 and (pause is None or pause_mode != "random"):
        raise PredictError("seed seeds random pausing only: it needs pause=... and pause_mode='random'", "seed")
    return (source, data, gate, values["exit"], pause, pause_mode, values["seed"], task, values["device"],
            values["batch_size"], values["flops"])


def _check_score_threshold(value) -> float | None:
    """``score_threshold``: None or a finite number in [0, 1] (never a bool or a string)."""
    import math

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PredictTypeError(f"score_threshold must be a number in [0, 1] or None, got {type(value).__name__}",
                               "score-threshold")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise PredictError(f"score_threshold must be in [0, 1] (a class probability), got {value!r}",
                           "score-threshold")
    return float(value)


def _check_cuda_graph(cuda_graph, device: torch.device, flops: bool) -> None:
    """``cuda_graph`` is a bool, and True only on a CUDA device without FLOP counting."""
    from adaseg.utils.arguments import ArgumentTypeError, check_bool

    try:
        check_bool(cuda_graph, "cuda_graph")
    except ArgumentTypeError as exc:
        raise PredictTypeError(str(exc), "cuda-graph") from None
    if cuda_graph and device.type != "cuda":
        raise PredictError(f"cuda_graph needs a CUDA device, got {device.type}", "cuda-graph")
    if cuda_graph and flops:
        raise PredictError("cuda_graph counts no FLOPs (a graph replay is invisible to the counter): pass flops=False",
                           "cuda-graph")


def _check_pause_output(pause_output, pause) -> None:
    """``pause_output`` is ``"decoder"`` or ``"aux"``, and ``"aux"`` comes with a pause plan
    (checked before anything is loaded; whether the model has an early exit, after)."""
    from adaseg.choices import PAUSE_OUTPUTS
    from adaseg.utils.arguments import ArgumentTypeError, check_choice

    try:
        check_choice(pause_output, "pause_output", PAUSE_OUTPUTS)
    except ArgumentTypeError as exc:
        raise PredictTypeError(str(exc), "pause-output") from None
    except ValueError as exc:
        raise PredictError(str(exc), "pause-output") from None
    if pause_output == "aux" and pause is None:
        raise PredictError("pause_output='aux' labels paused tokens by their auxiliary decoder: it needs pause "
                           "(e.g. pause='3:0.4,5:0.3')", "pause-output")


def _check_trained(parent_path, pause, pause_mode: str) -> None:
    """Entropy pausing needs trained auxiliary decoders (see :func:`adaseg.runs.from_checkpoint.check_pause`)."""
    from adaseg.runs.from_checkpoint import UntrainedError, check_pause

    try:
        check_pause(parent_path, pause, pause_mode)
    except UntrainedError as exc:
        raise PredictError(str(exc), "pause") from None


def _check_exit_and_pause(model, exit: int | None, pause, gate_exits) -> None:
    if exit is not None and not 1 <= exit <= model.depth:
        raise PredictError(f"--exit {exit} is outside the parent's layers 1..{model.depth}", "exit")
    if pause is None:
        return
    try:  # a model whose encoder cannot pause (rt) refuses every pause plan
        model.check_pausing()
    except ValueError as exc:
        raise PredictError(f"--pause {pause}: {exc}", "pause") from None
    try:
        pause.check_depth(model.depth)
    except ValueError as exc:
        raise PredictError(f"{pause}: {exc}", "pause") from None
    last = exit if exit is not None else (max(gate_exits) if gate_exits else model.depth)
    late = [layer for layer, _ in pause.stages if layer >= last]
    if late:
        raise PredictError(f"{pause}: pause layer {late[0]} is not below the last exit {last}: no image runs past "
                           f"layer {last}, so this pause would never happen", "pause")
    if exit is None and gate_exits:
        from adaseg.models.adaptive.settings import AdaptiveSettings

        try:  # an exit-2 gate decides after layer 2 on tokens that never paused in Step B
            model.check_gate_pause(AdaptiveSettings(exits="gate", pause=pause))
        except ValueError as exc:
            raise PredictError(f"--pause {pause}: {exc}", "pause") from None
