"""SymmetryAwareTraining: pretraining and fine-tuning of SA-Swin outside Slicer."""
