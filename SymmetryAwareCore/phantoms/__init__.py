"""phantoms package of SymmetryAwareCore."""
