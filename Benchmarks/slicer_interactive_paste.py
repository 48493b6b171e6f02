"""Time the Slicer side of one interactive edit: a reply's changed box pasted into a segment.

Headless (slicer-core), with the tests' fake worker (Testing/fake_interactive_worker.py), so
only the module's own cost is measured: fetching the block, reading the segment (and the
locked ones), writing it back. The worker's click time is the core's (docs/interactive.md).

    PYTHONPATH=.:Training python Benchmarks/slicer_interactive_paste.py [--shape 155 240 240]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SymmetryAwareSeg"))

from SymmetryAwareSegLib.interactive_edit import InteractiveSession, set_segment_array  # noqa: E402
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic  # noqa: E402
from SymmetryAwareSegLib.nodes import new_scene, set_volume_array  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[155, 240, 240], help="volume K J I")
    parser.add_argument("--clicks", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(args.shape)
    scene = new_scene()
    logic = SymmetryAwareSegLogic(scene=scene)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case_t1")
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    ijk_to_ras[:3, 3] = [shape[2] / 2, shape[1] / 2, -shape[0] / 2]
    set_volume_array(volume, np.zeros(shape, np.float32), ijk_to_ras)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    lesion = segmentation.GetSegmentation().AddEmptySegment("lesion")
    others = [segmentation.GetSegmentation().AddEmptySegment(name) for name in ("a", "b")]
    held = np.zeros(shape, np.uint8)
    held[shape[0] // 3: shape[0] // 2, shape[1] // 3: shape[1] // 2, shape[2] // 3: shape[2] // 2] = 1
    set_segment_array(scene, segmentation, others[0], held, volume)
    session = InteractiveSession(scene, command=[sys.executable, str(ROOT / "Testing" / "fake_interactive_worker.py")],
                                 export_inputs=logic.export_inputs)
    try:
        session.load([volume]).wait(300)
        session.poll()
        for locked in ((), tuple(others)):
            target = session.target(segmentation, lesion, locked)
            times = []
            for n in range(args.clicks):
                ijk = [shape[2] // 2 + 5 * n, shape[1] // 2 - 10 * len(locked), shape[0] // 2, 1]
                pending = session.click((ijk_to_ras @ ijk)[:3].tolist(), True, target)
                pending.wait(120)
                started = time.perf_counter()
                session.poll()
                times.append(time.perf_counter() - started)
                assert pending.ok, pending.message
            print(f"volume {shape[::-1]} (I J K), {len(locked)} locked segments: paste seconds "
                  + ", ".join(f"{t:.3f}" for t in times))
    finally:
        session.close()


if __name__ == "__main__":
    main()
