"""fusion: radiomics + deep-feature fusion for CT studies, from QC to a reproducible report."""

__version__ = "0.1.0"
