"""``symmetryaware segment``: lesion segmentation, hemispheric attention and a report per case."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Sequence

from ..contract import RunOptions, add_run_option_arguments
from ..errors import InputError
from ..io.validate import DEFAULT_MAX_VOXELS, VOXEL_BUDGET_ENV, check_resampled_budget
from .progress import ProgressPrinter, add_progress_argument, format_seconds

EXAMPLE = """examples:
  symmetryaware segment --sample --output-dir out
  symmetryaware segment case_t1.nii.gz case_t1ce.nii.gz case_t2.nii.gz case_flair.nii.gz -o out
  symmetryaware segment cases/ -o out --device cuda --tta       (one sub-folder per case)
  symmetryaware segment cases.csv -o out                        (case_id,t1,t1ce,t2,flair)
  symmetryaware segment scan/ -o out --roi-center=-30,12,20 --roi-size 50,50,50
  symmetryaware segment --sample -o out --attention-from=-40,-10,20  (where that point attends;
                                            "=" because the value starts with "-")

Per case, <output-dir>/<case_id>/ receives segmentation.nii.gz and segmentation.seg.nrrd
(on the first input's grid), attention.nii.gz (mirror focus, 0..1, models with SACA),
asymmetry.nii.gz, msp.mrk.json, overview.png and report.json; with --attention-from also
attention_from.nii.gz (attention per mL of that point over the other hemisphere). The maps
are explained in docs/attention.md. Finished cases are skipped unless --overwrite."""


def add_budget_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-voxels``: the voxel budget of :func:`SymmetryAwareCore.io.validate.max_voxels`."""
    parser.add_argument(
        "--max-voxels", metavar="N",
        help="largest image (and aligned grid) in voxels, checked from the header before reading "
        f"(default {DEFAULT_MAX_VOXELS:,}, 1 GiB as float32; also ${VOXEL_BUDGET_ENV})",
    )


def check_frame_budget(paths: Sequence[Path], spacing) -> None:
    """Refuse a case whose aligned grid at ``spacing`` (mm) would exceed the voxel budget,
    from the first channel's header (the aligned grid covers its field of view)."""
    from ..io.readers import read_header

    shape, voxel_mm3 = read_header(paths[0])
    for p in paths[1:]:
        read_header(p)  # each channel's own budget, before any is read
    check_resampled_budget(shape, voxel_mm3, spacing, "the aligned grid", paths[0])


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment lesions with a symmetry-aware model (files, a folder of cases, or a CSV)",
        description="Segment brain lesions: align each scan to its mid-sagittal plane, run the model on "
        "mirror-paired windows, and write labels, attention maps, the plane and a report on the "
        "input's own grid.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments shared by ``segment`` and ``attention``."""
    parser.add_argument("inputs", nargs="*", help="channel files of one case, a folder, or a CSV of cases")
    parser.add_argument("--sample", action="store_true", help="run on the bundled sample case (a glioma phantom)")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, help="folder for the results (one sub-folder per case)")
    # Every run option (model, device, overlap, ROI...) comes from the one definition the
    # Slicer module also builds its command line from.
    add_run_option_arguments(parser)
    parser.add_argument("--case-id", help="name of the output folder (one case only)")
    parser.add_argument("--no-overview", action="store_true", help="do not write overview.png")
    parser.add_argument("--overwrite", action="store_true", help="replace results that already exist")
    add_progress_argument(parser)
    add_budget_argument(parser)


def _sample_inputs() -> List[str]:
    from ..phantoms import sample_case_paths

    paths = sample_case_paths()
    return [str(paths[c]) for c in ("t1", "t1ce", "t2", "flair")]


def run(args: argparse.Namespace, outputs=None, model=None) -> int:
    """Run the pipeline over every case; ``outputs`` limits the files written (default: all);
    ``model`` is an already loaded model (default: ``args.model``)."""
    from ..inference.cases import ChannelSpec, discover_cases
    from ..inference.model_source import resolve_model
    from ..contract import OptionError
    from ..inference.pipeline import SegmentOptions, model_preprocessing, segment_case
    from ..io.atomic import sweep_stale
    from ..io.outputs import check_output_dir

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        run_options = RunOptions.from_namespace(args)
    except OptionError as error:
        raise InputError(str(error)) from None
    inputs = list(args.inputs)
    if args.sample:
        if inputs:
            raise InputError("give either --sample or input files, not both")
        inputs = _sample_inputs()
    if not inputs:
        raise InputError("no input given (files, a folder, a CSV, or --sample)")
    # Output checks first, so a bad location fails before the model is even loaded.
    output_dir = check_output_dir(args.output_dir, inputs)
    printer = ProgressPrinter(args.progress)
    model = model or resolve_model(args.model)
    from ..contract import card_findings

    if card_findings(model.card):  # its output is one probability per scan, not a voxel map
        raise InputError(f"model {model.card.name!r} is a scan-level classifier ({', '.join(card_findings(model.card))}): "
                         "use `symmetryaware classify` with it")
    from ..inference.postprocess import check_threshold

    check_threshold(model.card, run_options.threshold)  # one line for all cases, before any work
    if run_options.attention_from is not None and not getattr(model.network, "use_saca", False):
        raise InputError(f"--attention-from needs a model with symmetry-aware cross-attention; {run_options.model!r} has none")
    channels = [ChannelSpec(c.name, tuple(c.patterns)) for c in model.card.channels]
    cases = discover_cases(inputs, channels, case_id=args.case_id)
    if run_options.dicom_seg:
        _check_dicom_seg(cases, outputs)
    every_input = [p for case in cases for p in case.paths]
    check_output_dir(output_dir, every_input)
    for case in cases:
        check_output_dir(output_dir / case.case_id, every_input, holds_inputs_ok=False)
    for note in model.notes:
        printer.message(f"WARNING: {note}")
    if output_dir.is_dir():
        sweep_stale(output_dir)  # hidden folders of killed runs (never those of a live run)
    spec = model_preprocessing(model)  # a card without its preprocessing is refused here
    spacing = spec.spacing
    from ..preprocessing.bias import bias_correction_applies

    # --bias-correction on a CT model: one line, before any case is read.
    bias_correction_applies(spec.bias_correction == "n4", spec.is_ct, run_options.bias_correction)
    options = SegmentOptions(
        device=run_options.device,
        overlap=run_options.overlap,
        sw_batch_size=run_options.sw_batch,
        tta=run_options.tta,
        amp=run_options.amp,
        msp_on_failure=run_options.msp_fallback,
        require_head=run_options.require_head,
        roi_center_ras=run_options.roi_center,
        roi_size_mm=run_options.roi_size,
        attention_from_ras=run_options.attention_from,
        threshold=run_options.threshold,
        bias_correction=run_options.bias_correction,
        overview=not args.no_overview,
        overwrite=args.overwrite,
        outputs=tuple(outputs) if outputs else None,
    )
    rows = []
    for index, case in enumerate(cases):
        printer.start_case(index, len(cases), case.case_id)
        for note in case.notes:
            printer.message(f"{case.case_id}: {note}")

        def windows(done: int, total: int) -> None:
            printer.detail = f"window {done}/{total}"

        start = time.perf_counter()
        try:
            if args.roi_center is None:
                check_frame_budget(case.paths, spacing)
            result = segment_case(case.paths, output_dir, model, options, case.case_id, printer.update, windows)
            if run_options.dicom_seg:
                _write_dicom_seg(result, case.paths[0], model)
        except InputError as error:
            if len(cases) == 1:
                raise
            printer.message(f"{case.case_id}: error: {error}")
            rows.append((case.case_id, "failed", "-", format_seconds(time.perf_counter() - start), str(error)))
            continue
        except (OSError, MemoryError) as error:  # the machine, not a bug: one line, no traceback
            if len(cases) == 1:
                raise
            printer.message(f"{case.case_id}: error: {error}")
            rows.append((case.case_id, "failed", "-", format_seconds(time.perf_counter() - start), f"{type(error).__name__}: {error}"))
            continue
        except Exception as error:  # a bug on one case must not end a batch; say what it was
            if len(cases) == 1:
                raise
            logging.exception("case %s failed", case.case_id)
            rows.append((case.case_id, "failed", "-", format_seconds(time.perf_counter() - start), f"{type(error).__name__}: {error}"))
            continue
        printer.detail = ""
        volume = result.report.get("total", {}).get("volume_ml", 0.0)
        status = "skipped (done)" if result.skipped else "ok"
        rows.append((case.case_id, status, f"{volume:.2f}", format_seconds(time.perf_counter() - start), str(result.output_dir)))
    _print_summary(rows)
    return 0 if all(r[1] != "failed" for r in rows) else 1


def _check_dicom_seg(cases, outputs) -> None:
    """``--dicom-seg`` is refused before any heavy work when it cannot be honoured."""
    from ..io.dicom_seg import highdicom_available

    if outputs and "labelmap" not in outputs:
        raise InputError("--dicom-seg needs the segmentation, which this command does not write")
    if not highdicom_available():
        raise InputError("--dicom-seg needs highdicom: pip install 'symmetryawareseg[dicom]'")
    for case in cases:
        if not Path(case.paths[0]).is_dir():
            raise InputError("--dicom-seg needs a DICOM series folder as the first channel (the SEG references it)", case.paths[0])


def _write_dicom_seg(result, source_folder: Path, model) -> Path:
    """``<case>/segmentation.dcm`` from the case's label map, referencing ``source_folder``'s series."""
    import nibabel as nib
    import numpy as np

    from ..contract import DICOM_SEG_FILE, OUTPUT_FILES
    from ..inference.pipeline import _label_infos as label_infos  # the .seg.nrrd's labels, same terminology
    from ..io.dicom_seg import write_dicom_seg

    labelmap = nib.load(str(result.output_dir / OUTPUT_FILES["labelmap"]))  # also for a finished (skipped) case
    labels = np.asarray(labelmap.dataobj).astype(np.uint16)
    card = model.card
    return write_dicom_seg(
        labels, labelmap.affine, source_folder, result.output_dir / DICOM_SEG_FILE, label_infos(model),
        algorithm=getattr(card, "name", "") or "SymmetryAwareSeg", algorithm_version=str(getattr(card, "version", "") or ""),
    )


def _print_summary(rows: Sequence[tuple]) -> None:
    header = ("case", "status", "lesion mL", "time", "output / error")
    table = [header, *rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(4)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  " + header[4], file=sys.stderr)
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths)) + "  " + str(r[4]), file=sys.stderr)
    failed = sum(r[1] == "failed" for r in rows)
    print(f"{len(rows)} case(s): {len(rows) - failed} ok, {failed} failed", file=sys.stderr)
