"""inference package of SymmetryAwareCore."""
