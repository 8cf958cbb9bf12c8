"""Datasets in upstream's site layout: manifest, validation, synthetic phantoms, sparse labels, import,
augmentation and the per-site PyTorch dataset (see docs/data.md). Submodules are imported on use."""
